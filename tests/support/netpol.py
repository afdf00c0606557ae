"""What a NetworkPolicy-enforcing CNI admits, as Kubernetes defines it (no CNI runs here).

Semantics from kubernetes/api networking/v1/types.go (NetworkPolicySpec, NetworkPolicyIngressRule,
NetworkPolicyPeer, NetworkPolicyPort) and the "Network Policies" concept page:
- a pod is isolated for ingress once ANY policy in its namespace selects it with "Ingress" in policyTypes;
  an isolated pod admits a connection only if SOME selecting policy has an ingress rule admitting it;
- a rule admits when one of its `from` peers matches the source (an empty `from` matches every source) and
  one of its `ports` matches (no `ports`: every port);
- a peer with only `podSelector` matches pods of the POLICY's namespace; only `namespaceSelector`: every pod
  of the matching namespaces; both: matching pods in matching namespaces;
- a label selector's matchLabels must all be present ({} matches everything); matchExpressions are not
  used by trainkit and are refused here rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PodRef:
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        # Every namespace carries kubernetes.io/metadata.name (set by the API server since 1.21).
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if selector.get("matchExpressions"):
        raise NotImplementedError("matchExpressions: not used by trainkit's policies")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, policy_ns: str, source: PodRef) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic is judged by the selectors
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is None:
        return source.namespace == policy_ns and selects(pods, source.labels)
    return selects(namespaces, source.ns_labels()) and (pods is None or selects(pods, source.labels))


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def admits(policies: list[dict], source: PodRef, target: PodRef, port: int, protocol: str = "TCP") -> bool:
    """Whether `source` may open a connection to `target`:`port` under `policies` (all namespaces' policies)."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace
        and selects(p["spec"].get("podSelector"), target.labels)
        and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])
    ]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            from_ok = not peers or any(_peer_matches(peer, policy["metadata"]["namespace"], source) for peer in peers)
            if from_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False
