{{/* Chart name, 63 characters at most. */}}
{{- define "kvindex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already has it. */}}
{{- define "kvindex.fullname" -}}
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

{{- define "kvindex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kvindex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvindex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kvindex.labels" -}}
helm.sh/chart: {{ include "kvindex.chart" . }}
{{ include "kvindex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kvindex.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret holding the auth token: the existing one, else the one this chart creates. */}}
{{- define "kvindex.authSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else }}
{{- printf "%s-auth" (include "kvindex.fullname" .) }}
{{- end }}
{{- end }}

{{- define "kvindex.tlsSecretName" -}}
{{- required "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret)" .Values.tls.existingSecret }}
{{- end }}

{{- define "kvindex.clientCASecretName" -}}
{{- default (include "kvindex.tlsSecretName" .) .Values.tls.clientCA.existingSecret }}
{{- end }}

{{- define "kvindex.bootstrapCASecretName" -}}
{{- default (include "kvindex.tlsSecretName" .) .Values.bootstrap.ca.existingSecret }}
{{- end }}

{{/* The bootstrap verifies its peer with bootstrap.ca: only with TLS and a bootstrap. */}}
{{- define "kvindex.bootstrapCA" -}}
{{- if and .Values.tls.enabled .Values.bootstrap.enabled .Values.bootstrap.ca.enabled }}true{{ end }}
{{- end }}

{{/* Files mounted into the container. */}}
{{- define "kvindex.authTokenFile" -}}/etc/kvindex/auth/token{{- end }}
{{- define "kvindex.tlsCertFile" -}}/etc/kvindex/tls/tls.crt{{- end }}
{{- define "kvindex.tlsKeyFile" -}}/etc/kvindex/tls/tls.key{{- end }}
{{- define "kvindex.clientCAFile" -}}/etc/kvindex/client-ca/ca.crt{{- end }}
{{- define "kvindex.bootstrapCAFile" -}}/etc/kvindex/bootstrap-ca/ca.crt{{- end }}
{{- define "kvindex.podsFile" -}}/etc/kvindex/pods/pods.textproto{{- end }}

{{/* The peers Service (ready replicas only) as a --bootstrap_from target. */}}
{{- define "kvindex.peersAddress" -}}
{{ include "kvindex.fullname" . }}-peers.{{ .Release.Namespace }}.svc:{{ int .Values.ports.grpc }}
{{- end }}
