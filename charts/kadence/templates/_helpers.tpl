{{/* Names, labels and the shared pieces of the Kadence chart. */}}

{{- define "kadence.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or <release> when the release name already contains the chart name. */}}
{{- define "kadence.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kadence.operatorName" -}}
{{- printf "%s-operator" (include "kadence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kadence.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "kadence.labels" -}}
helm.sh/chart: {{ include "kadence.chart" .ctx }}
{{ include "kadence.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kadence
{{- end -}}

{{- define "kadence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kadence.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kadence.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kadence.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kadence.operatorImage" -}}
{{- $img := .Values.image.operator -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "kadence.workerImage" -}}
{{- $img := .Values.image.worker -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "kadence.natsName" -}}
{{- printf "%s-nats" (include "kadence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kadence.minioName" -}}
{{- printf "%s-minio" (include "kadence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* KADENCE_NATS_URL: the bundled server's Service, or nats.url (rendered as a template). */}}
{{- define "kadence.natsUrl" -}}
{{- if .Values.nats.install -}}
{{- printf "nats://%s.%s.svc:4222" (include "kadence.natsName" .) .Release.Namespace -}}
{{- else -}}
{{- tpl .Values.nats.url . -}}
{{- end -}}
{{- end -}}

{{/* KADENCE_S3_ENDPOINT: the bundled MinIO's Service, or s3.endpoint (rendered as a template). */}}
{{- define "kadence.s3Endpoint" -}}
{{- if .Values.minio.install -}}
{{- printf "%s.%s.svc:9000" (include "kadence.minioName" .) .Release.Namespace -}}
{{- else -}}
{{- tpl .Values.s3.endpoint . -}}
{{- end -}}
{{- end -}}

{{- define "kadence.s3Secure" -}}
{{- if .Values.minio.install -}}false{{- else -}}{{ .Values.s3.secure }}{{- end -}}
{{- end -}}

{{/* The Secret with accessKey/secretKey, or "" when no credentials are passed. */}}
{{- define "kadence.s3Secret" -}}
{{- if .Values.s3.existingSecret -}}
{{- .Values.s3.existingSecret -}}
{{- else if .Values.minio.install -}}
{{- include "kadence.minioName" . -}}
{{- end -}}
{{- end -}}

{{/* The restricted pod security context (pod level). */}}
{{- define "kadence.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* The restricted container security context. */}}
{{- define "kadence.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Scheduling of every pod of the chart. */}}
{{- define "kadence.scheduling" -}}
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
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Checks that JSON Schema cannot express; they fail rendering with the field's name. */}}
{{- define "kadence.validate" -}}
{{- $s := .Values.scheduler -}}
{{- if ge (float64 $s.renewDeadline) (float64 $s.leaseDuration) -}}
{{- fail (printf "scheduler.renewDeadline (%v) must be less than scheduler.leaseDuration (%v)" $s.renewDeadline $s.leaseDuration) -}}
{{- end -}}
{{- if and (hasKey $s "duplicateWindow") (lt (float64 $s.duplicateWindow) (mulf 2 (float64 $s.leaseDuration))) -}}
{{- fail (printf "scheduler.duplicateWindow (%v) must be at least twice scheduler.leaseDuration (%v)" $s.duplicateWindow $s.leaseDuration) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- end -}}
