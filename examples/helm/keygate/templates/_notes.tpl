{{- /* The text of NOTES.txt, a helper so that the chart's test can render it: helm template leaves NOTES.txt out. */ -}}
{{- define "keygate.notes" -}}
{{- $fullname := include "keygate.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $kind := ternary "deploy" "statefulset" (eq (include "keygate.etcd" .) "true") -}}
Keygate {{ .Chart.AppVersion }}: {{ .Values.replicaCount }} replica(s), keys in {{ if include "keygate.etcd" . }}etcd ({{ join ", " .Values.store.etcd.endpoints }}){{ else }}{{ .Values.store.path }} on the PersistentVolumeClaim data-{{ $fullname }}-0{{ end }}.
{{- if and (include "keygate.etcd" .) (not .Values.rateLimits.redis.addr) }}
Rate limits are counted per replica: set rateLimits.redis.addr to share them.
{{- end }}

1. The admin token (every right) is in the Secret {{ include "keygate.tokenSecret" . }}:

   kubectl -n {{ $ns }} get secret {{ include "keygate.tokenSecret" . }} -o jsonpath='{.data.{{ include "keygate.tokenKey" . }}}' | base64 -d; echo

   The CLI in the pod reads it already:

   kubectl -n {{ $ns }} exec {{ $kind }}/{{ $fullname }} -- keygate tenants create --name Acme --output json
   kubectl -n {{ $ns }} exec {{ $kind }}/{{ $fullname }} -- keygate keys create --tenant <tenant id> --name demo --output json

2. The admin API from your machine (it is on no Service):

   kubectl -n {{ $ns }} port-forward {{ $kind }}/{{ $fullname }} 9003:9003 &
   export KEYGATE_ADMIN_TOKEN="$(kubectl -n {{ $ns }} get secret {{ include "keygate.tokenSecret" . }} -o jsonpath='{.data.{{ include "keygate.tokenKey" . }}}' | base64 -d)"
{{- if .Values.admin.tls.enabled }}
   kubectl -n {{ $ns }} get secret {{ include "keygate.tlsSecret" . }} -o jsonpath='{.data.{{ .Values.admin.tls.trustKey | replace "." "\\." }}}' | base64 -d > keygate-admin.crt
   SSL_CERT_FILE=keygate-admin.crt keygate tenants list --admin-url https://127.0.0.1:9003
{{- else }}
   keygate tenants list --admin-url http://127.0.0.1:9003
{{- end }}

3. Point your proxy at Keygate: Envoy's ext_authz cluster at {{ $fullname }}-pods.{{ $ns }}:9001
   (STRICT_DNS, ROUND_ROBIN, HTTP/2); nginx, Traefik or Caddy at {{ $fullname }}.{{ $ns }}:{{ .Values.service.httpPort }}.

4. Istio: register Keygate as an external authorizer in the mesh config
   (istioctl install -f your-operator.yaml -f this-snippet.yaml), then name it in
   AuthorizationPolicies with `provider: {name: keygate}` (examples/istio):

apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    extensionProviders:
      - name: keygate
        envoyExtAuthzGrpc:
          service: {{ $fullname }}.{{ $ns }}.svc.cluster.local
          port: {{ .Values.service.grpcPort }}
          timeout: 0.5s
          failOpen: false
          statusOnError: "503"
{{- end -}}
