{{/* The names every object shares. */}}
{{- define "keygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "keygate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "keygate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "keygate.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "keygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "keygate.labels" -}}
{{ include "keygate.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* etcd mode: the keys live in etcd, the replicas are a Deployment. */}}
{{- define "keygate.etcd" -}}
{{- if .Values.store.etcd.endpoints }}true{{ end -}}
{{- end -}}

{{- define "keygate.tokenSecret" -}}
{{- default (printf "%s-admin" (include "keygate.fullname" .)) .Values.admin.existingSecret -}}
{{- end -}}

{{- define "keygate.tokenKey" -}}
{{- if .Values.admin.existingSecret }}{{ .Values.admin.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{- define "keygate.tlsSecret" -}}
{{- default (printf "%s-admin-tls" (include "keygate.fullname" .)) .Values.admin.tls.existingSecret -}}
{{- end -}}

{{/* Where the pod reads its files, and the listeners. */}}
{{- define "keygate.configDir" -}}/etc/keygate/config{{- end -}}
{{- define "keygate.tokenDir" -}}/etc/keygate/admin-token{{- end -}}
{{- define "keygate.tlsDir" -}}/etc/keygate/admin-tls{{- end -}}
{{- define "keygate.adminListen" -}}
{{- if .Values.admin.tls.enabled }}0.0.0.0:9003{{ else }}127.0.0.1:9003{{ end -}}
{{- end -}}

{{/*
The Keygate config: .Values.config with what the chart wires set over it,
so that the listeners, files and store always agree with the pod spec.
*/}}
{{- define "keygate.config" -}}
{{- $store := dict "path" .Values.store.path -}}
{{- if include "keygate.etcd" . -}}
{{- $_ := set $store "etcd" (dict "endpoints" .Values.store.etcd.endpoints "replica_ttl" .Values.store.etcd.replicaTTL) -}}
{{- end -}}
{{- $admin := dict "token_file" (printf "%s/%s" (include "keygate.tokenDir" .) (include "keygate.tokenKey" .)) -}}
{{- if .Values.admin.tls.enabled -}}
{{- $_ := set $admin "tls_cert_file" (printf "%s/tls.crt" (include "keygate.tlsDir" .)) -}}
{{- $_ := set $admin "tls_key_file" (printf "%s/tls.key" (include "keygate.tlsDir" .)) -}}
{{- end -}}
{{- $wired := dict "store" $store "admin" $admin "listen" (dict "grpc" "0.0.0.0:9001" "http" "0.0.0.0:9002" "admin" (include "keygate.adminListen" .) "metrics" "0.0.0.0:9004") -}}
{{- if .Values.rateLimits.redis.addr -}}
{{- $_ := set $wired "rate_limits" (dict "redis" (dict "addr" .Values.rateLimits.redis.addr "fail_open" .Values.rateLimits.redis.failOpen)) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite (deepCopy (default (dict) .Values.config)) $wired) -}}
{{- end -}}
