{{/* Names and labels shared by every template. */}}

{{- define "trainkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-trainkit" (or fullnameOverride), at most 52 characters so derived names stay legal. */}}
{{- define "trainkit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := include "trainkit.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trainkit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trainkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trainkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trainkit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trainkit
{{- end }}

{{- define "trainkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "trainkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, or repository:tag (tag defaults to the chart's appVersion). Argument: (list $image $root). */}}
{{- define "trainkit.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list; ["*"]-free: empty list means cluster-wide. */}}
{{- define "trainkit.watchNamespaces" -}}
{{- if eq .Values.watch.scope "namespaced" }}
{{- if .Values.watch.namespaces }}
{{- toJson .Values.watch.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- else }}
{{- toJson (list) }}
{{- end }}
{{- end }}

{{/* A map as "k1=v1,k2=v2" (sorted keys); the schema keeps ',' and '=' out of keys and values. */}}
{{- define "trainkit.keyValues" -}}
{{- $pairs := list }}
{{- range $k := keys . | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $ $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
