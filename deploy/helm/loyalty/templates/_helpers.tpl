{{/* Names ---------------------------------------------------------------------------- */}}

{{- define "loyalty.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loyalty.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "root" $ "name" "ingest") */}}
{{- define "loyalty.componentName" -}}
{{- printf "%s-%s" (include "loyalty.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loyalty.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "loyalty.labels" -}}
helm.sh/chart: {{ include "loyalty.chart" . }}
{{ include "loyalty.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: loyalty-engine
{{- end }}

{{- define "loyalty.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loyalty.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* labels of one component; (dict "root" $ "name" "loyalty") */}}
{{- define "loyalty.componentLabels" -}}
{{ include "loyalty.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "loyalty.componentSelector" -}}
{{ include "loyalty.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Image and secrets ------------------------------------------------------------------ */}}

{{- define "loyalty.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "loyalty.secretName" -}}
{{- default (include "loyalty.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "loyalty.webhookSecretName" -}}
{{- default (printf "%s-webhooks" (include "loyalty.fullname" .)) .Values.secrets.existingWebhookSecret }}
{{- end }}

{{- define "loyalty.programConfigMap" -}}
{{- default (printf "%s-program" (include "loyalty.fullname" .)) .Values.program.existingConfigMap }}
{{- end }}

{{/* the consumer group of a processor: TOPIC_PREFIX + name (runner.py `self.group`) */}}
{{- define "loyalty.group" -}}
{{- printf "%s%s" .root.Values.topicPrefix .name }}
{{- end }}

{{/* Environment -------------------------------------------------------------------------- */}}

{{/* what schemas/settings.py Settings.from_env reads, plus LOG_LEVEL */}}
{{- define "loyalty.settingsEnv" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: TOPIC_PREFIX
  value: {{ .Values.topicPrefix | quote }}
- name: TOPIC_PARTITIONS
  value: {{ .Values.partitions | quote }}
- name: TOPIC_REPLICATION_FACTOR
  value: {{ .Values.replicationFactor | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "loyalty.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "loyalty.secretName" . }}
      key: DATABASE_URL
{{- end }}

{{/* health server env of the services built on plumbing.observability.HealthServer */}}
{{- define "loyalty.metricsHostEnv" -}}
- name: METRICS_HOST
  value: "0.0.0.0"
{{- end }}

{{/* Pod parts ---------------------------------------------------------------------------- */}}

{{- define "loyalty.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* probes on a named port; (dict "root" $ "port" "metrics" "ready" "/readyz" "liveness" .Values.x.liveness) */}}
{{- define "loyalty.probes" -}}
startupProbe:
  httpGet:
    path: {{ .root.Values.probes.livenessPath }}
    port: {{ .port }}
  periodSeconds: 5
  failureThreshold: 120
readinessProbe:
  httpGet:
    path: {{ .ready }}
    port: {{ .port }}
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: {{ .root.Values.probes.livenessPath }}
    port: {{ .port }}
  periodSeconds: {{ .liveness.periodSeconds | default 10 }}
  failureThreshold: {{ .liveness.failureThreshold | default 6 }}
  timeoutSeconds: 5
{{- end }}

{{/* pod annotations: scrape hints for a Prometheus without the operator */}}
{{- define "loyalty.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* hook Job metadata; (dict "root" $ "weight" "0") */}}
{{- define "loyalty.hookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/* the consumers whose replicas are bounded by the partitions: name -> values */}}
{{- define "loyalty.consumers" -}}
{{- $c := dict "loyalty" .Values.loyalty "audiences" .Values.audiences "journeys" .Values.journeys "delivery" .Values.delivery "sink" .Values.sink }}
{{- if .Values.router.enabled }}
{{- $_ := set $c "router" .Values.router }}
{{- end }}
{{- toYaml $c }}
{{- end }}
