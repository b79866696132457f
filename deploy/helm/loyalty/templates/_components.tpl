{{/*
The workloads, as a YAML list the templates range over. Per component:
  name, kind (Deployment | StatefulSet), values (its section of values.yaml), args (after the
  image's `loyalty` entry point), port / portName (what /healthz and /metrics are served on), readinessPath,
  env (YAML list), group (consumer group, empty for ingest), scaler (kafka | prometheus | none).
Flags and env names are the ones the code reads: ingest/service.py, processors/runtime/service.py,
processors/delivery/service.py, sinks/service.py (tests/deploy/test_helm_chart.py checks them).
*/}}
{{- define "loyalty.components" -}}
{{- $root := . }}
{{- $mp := int .Values.metricsPort }}
{{- $podName := dict "name" "INSTANCE_ID" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name")) }}
{{- $metricsEnv := list (dict "name" "METRICS_HOST" "value" "0.0.0.0") (dict "name" "METRICS_PORT" "value" (toString $mp)) }}
{{- $apiKeys := dict "name" "INGEST_API_KEYS" "valueFrom" (dict "secretKeyRef" (dict "name" (include "loyalty.secretName" .) "key" "INGEST_API_KEYS")) }}
{{- $database := dict "name" "DATABASE_URL" "valueFrom" (dict "secretKeyRef" (dict "name" (include "loyalty.secretName" .) "key" "DATABASE_URL")) }}
- name: ingest
  kind: Deployment
  values: {{ toJson .Values.ingest }}
  args: [ingest, --host, 0.0.0.0, --port, {{ .Values.ingest.port | quote }}, --workers, {{ .Values.ingest.workers | quote }}]
  port: {{ .Values.ingest.port }}
  portName: http
  readinessPath: {{ .Values.ingest.readinessPath }}
  env: {{ toJson (concat (list $database $apiKeys) (.Values.ingest.env | default list)) }}
  group: ""
  scaler: none
{{- range $name := list "loyalty" "audiences" "journeys" }}
{{- $v := index $root.Values $name }}
{{- $env := concat $metricsEnv (list $podName (dict "name" "STATE_DIR" "value" "/var/lib/loyalty/state") (dict "name" "ERROR_POLICY" "value" $v.errorPolicy) (dict "name" "RESTORE_WORKERS" "value" (toString ($v.restoreWorkers | default 1)))) }}
- name: {{ $name }}
  kind: StatefulSet
  values: {{ toJson $v }}
  args: [process, {{ $name }}, --static-membership]
  port: {{ $mp }}
  portName: metrics
  readinessPath: {{ $root.Values.probes.readinessPath }}
  env: {{ toJson $env }}
  group: {{ include "loyalty.group" (dict "root" $root "name" $name) | quote }}
  scaler: kafka
{{- end }}
- name: delivery
  kind: Deployment
  values: {{ toJson .Values.delivery }}
  args: [process, delivery, --state-dir, /tmp/state/delivery]
  port: {{ $mp }}
  portName: metrics
  readinessPath: {{ $root.Values.probes.readinessPath }}
  env: {{ toJson $metricsEnv }}
  webhookSecrets: true
  group: {{ include "loyalty.group" (dict "root" $root "name" "delivery") | quote }}
  scaler: kafka
{{- if .Values.router.enabled }}
- name: router
  kind: Deployment
  values: {{ toJson .Values.router }}
  args: [process, router]
  port: {{ $mp }}
  portName: metrics
  readinessPath: {{ $root.Values.probes.readinessPath }}
  env: {{ toJson (concat $metricsEnv (list $podName (dict "name" "STATE_DIR" "value" "/tmp/state") (dict "name" "ERROR_POLICY" "value" .Values.router.errorPolicy))) }}
  group: {{ include "loyalty.group" (dict "root" $root "name" "router") | quote }}
  scaler: kafka
{{- end }}
{{- $sinkArgs := list "sink" "--no-migrate" }}
{{- with .Values.sink.batchSize }}{{ $sinkArgs = concat $sinkArgs (list "--batch-size" (toString .)) }}{{ end }}
{{- with .Values.sink.lingerMs }}{{ $sinkArgs = concat $sinkArgs (list "--linger-ms" (toString .)) }}{{ end }}
- name: sink
  kind: Deployment
  values: {{ toJson .Values.sink }}
  args: {{ toJson $sinkArgs }}
  port: {{ $mp }}
  portName: metrics
  readinessPath: {{ $root.Values.probes.readinessPath }}
  env: {{ toJson (concat (list $database) $metricsEnv) }}
  group: {{ printf "%ssink" .Values.topicPrefix | quote }}
  scaler: prometheus
{{- end }}
