{{/* The chart name, truncated to a DNS label. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's resource name. Pod names add "-N" and Services "-metrics", so it stays at 52
characters to leave room for those within a 63-character label.
*/}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.metricsServiceName" -}}
{{- printf "%s-metrics" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The processor's pods (not the directory load's): the StatefulSet, Services and PDB select these. */}}
{{- define "switchboard.processorSelectorLabels" -}}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/component: processor
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The PromQL label matchers that pick this release's scrape targets. */}}
{{- define "switchboard.alertSelector" -}}
job="{{ include "switchboard.metricsServiceName" . }}", namespace="{{ .Release.Namespace }}"
{{- end }}

{{/*
The settings shared by the processor and the directory load: `config` and `secretEnv` as
SWITCHBOARD_<SECTION>__<KEY> variables. The binary ignores (and warns about) SWITCHBOARD_*
variables that name no setting, so nothing else here should carry that prefix.
*/}}
{{- define "switchboard.configEnv" -}}
{{- range $section, $keys := .Values.config }}
{{- if kindIs "map" $keys }}
{{- range $key, $value := $keys }}
{{- if and (eq $section "kafka") (eq $key "transactional_id") }}
{{- fail "config.kafka.transactional_id: the chart derives it from the pod name; use transactionalIdPrefix" }}
{{- end }}
{{- if and (eq $section "http") (eq $key "listen") }}
{{- fail "config.http.listen: the chart sets it from http.port" }}
{{- end }}
{{- if and (eq $section "kafka") (eq $key "properties") }}
{{- fail "config.kafka.properties: librdkafka properties cannot be given as environment variables; use configFileSecret" }}
{{- end }}
- name: {{ printf "SWITCHBOARD_%s__%s" $section $key | upper }}
  value: {{ include "switchboard.envValue" $value }}
{{- end }}
{{- else }}
- name: {{ printf "SWITCHBOARD_%s" $section | upper }}
  value: {{ include "switchboard.envValue" $keys }}
{{- end }}
{{- end }}
{{- range $section, $keys := .Values.secretEnv }}
{{- range $key, $ref := $keys }}
- name: {{ printf "SWITCHBOARD_%s__%s" $section $key | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secretEnv.%s.%s.name" $section $key) $ref.name | quote }}
      key: {{ required (printf "secretEnv.%s.%s.key" $section $key) $ref.key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A setting as an environment variable's value. Whole numbers from values.yaml arrive as floats,
which would print as 1.048576e+06; they are printed as integers.
*/}}
{{- define "switchboard.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- . | int64 | toString | quote }}
{{- else }}
{{- . | toString | quote }}
{{- end }}
{{- end }}

{{/* `--config FILE` when configFileSecret is set, as container arguments after the command. */}}
{{- define "switchboard.configArgs" -}}
{{- if .Values.configFileSecret.name }}
- --config
- /etc/switchboard/config/{{ .Values.configFileSecret.key }}
{{- end }}
{{- end }}

{{- define "switchboard.configVolumeMount" -}}
{{- if .Values.configFileSecret.name }}
- name: config
  mountPath: /etc/switchboard/config
  readOnly: true
{{- end }}
{{- end }}

{{- define "switchboard.configVolume" -}}
{{- if .Values.configFileSecret.name }}
- name: config
  secret:
    secretName: {{ .Values.configFileSecret.name }}
    items:
      - key: {{ .Values.configFileSecret.key }}
        path: {{ .Values.configFileSecret.key }}
{{- end }}
{{- end }}
