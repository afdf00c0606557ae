"""A real headless Chromium for the HTML reports' tests: find it, run it, and check a page's layout from the
DOM (text boxes that overlap, text clipped by its box, fonts too small to read), by a script injected into
a copy of the page whose verdict Chromium's dumped DOM carries back."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


# Every visible element that holds text of its own (no such element inside it) is a label; two labels'
# boxes must not intersect, none may be cut off by its own box, and none may be set below 11 px.
LAYOUT_CHECK = """
<script>
window.addEventListener('load', function () {
  var sel = 'h1,h2,h3,p,li,th,td,b,span,div.callout,code';
  var all = Array.prototype.slice.call(document.querySelectorAll(sel)).filter(function (e) {
    var r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && e.textContent.trim().length > 0;
  });
  var labels = all.filter(function (e) { return !all.some(function (o) { return o !== e && e.contains(o); }); });
  var problems = [], small = [];
  labels.forEach(function (e) {
    var cs = getComputedStyle(e), size = parseFloat(cs.fontSize);
    if (size < 11) small.push('font ' + size + 'px: ' + e.textContent.trim().slice(0, 40));
    if (cs.overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1)
      problems.push('clipped: ' + e.textContent.trim().slice(0, 40));
  });
  // Per line box (getClientRects): an inline label that wraps is several boxes, not one big rectangle.
  var boxes = labels.map(function (e) { return Array.prototype.slice.call(e.getClientRects()); });
  function meet(a, b) {
    return Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
           Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  }
  for (var i = 0; i < labels.length; i++) {
    for (var j = i + 1; j < labels.length; j++) {
      if (boxes[i].some(function (a) { return boxes[j].some(function (b) { return meet(a, b); }); }))
        problems.push('overlap: "' + labels[i].textContent.trim().slice(0, 30) + '" / "' +
                      labels[j].textContent.trim().slice(0, 30) + '"');
    }
  }
  problems = problems.slice(0, 20).concat(small.slice(0, 20));
  document.body.setAttribute('data-labels', String(labels.length));
  document.body.setAttribute('data-layout', problems.length ? JSON.stringify(problems) : 'ok');
});
</script>
"""


class BodyAttributes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.body: dict = {}

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)


def layout_problems(browser: str, html: str, workdir: Path, width: int = 1280) -> tuple[int, list[str] | None]:
    """(labels checked, problems) of the page as Chromium lays it out at `width` px; problems None: the
    check never ran."""
    page = workdir / f"layout-{width}.html"
    page.write_text(html.replace("</body>", LAYOUT_CHECK + "</body>"))
    proc = chromium(browser, workdir / f"profile-{width}", f"--window-size={width},2000", "--dump-dom", page.as_uri())
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-2000:])
    attrs = BodyAttributes()
    attrs.feed(proc.stdout)
    verdict = attrs.body.get("data-layout")
    if verdict is None:
        return 0, None
    return int(attrs.body.get("data-labels", "0")), [] if verdict == "ok" else json.loads(verdict)
