{{/* The chart's name. */}}
{{- define "selfimprove.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object's name. */}}
{{- define "selfimprove.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "selfimprove.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "selfimprove.labels" -}}
helm.sh/chart: {{ include "selfimprove.chart" . }}
app.kubernetes.io/name: {{ include "selfimprove.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "selfimprove.selectorLabels" -}}
app.kubernetes.io/name: {{ include "selfimprove.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector labels of the Pushgateway pods. */}}
{{- define "selfimprove.pushgatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "selfimprove.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: pushgateway
{{- end }}

{{- define "selfimprove.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "selfimprove.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "selfimprove.pushgatewayName" -}}
{{- printf "%s-pushgateway" (include "selfimprove.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The namespaces the operator serves: none (all) for scope cluster; fails early on a contradiction. */}}
{{- define "selfimprove.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespaced" }}
{{- if not .Values.rbac.watchNamespaces }}
{{- fail "rbac.watchNamespaces: list the namespaces to serve when rbac.scope is namespaced" }}
{{- end }}
{{- toJson (uniq .Values.rbac.watchNamespaces) }}
{{- else }}
{{- if .Values.rbac.watchNamespaces }}
{{- fail "rbac.watchNamespaces: only with rbac.scope namespaced (scope cluster serves every namespace)" }}
{{- end }}
{{- toJson (list) }}
{{- end }}
{{- end }}

{{- define "selfimprove.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "selfimprove.stageImage" -}}
{{- printf "%s:%s" .Values.stageImage.repository (default .Chart.AppVersion .Values.stageImage.tag) }}
{{- end }}

{{/*
The rules the operator needs, shared by the ClusterRole and the per-namespace Roles.
See the chart README ("RBAC") for why each one is there.
*/}}
{{- define "selfimprove.rules" -}}
- apiGroups: ["selfimprove.dev"]
  resources: ["selfimprovementloops"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["selfimprove.dev"]
  resources: ["selfimprovementloops/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- if .Values.rbac.readSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- if .Values.jobset.enabled }}
- apiGroups: ["jobset.x-k8s.io"]
  resources: ["jobsets"]
  verbs: ["list", "watch", "create"]
{{- end }}
{{- end }}

{{/*
Read-only, cluster-wide rules for kopf's own scanning (settings.scanning): it watches CRDs to notice the CRD being
installed or changed, and, when serving a fixed list of namespaces, lists and watches namespaces. Without them
kopf retries each 403 with backoff (about a minute, logged as errors) and then falls back: the namespaces are taken
as given and the CRD must exist when the operator starts.
*/}}
{{- define "selfimprove.scanningRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if eq .Values.rbac.scope "namespaced" }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
