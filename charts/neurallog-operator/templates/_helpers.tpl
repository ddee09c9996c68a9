{{/* The release's base name: the release name when it already names the chart. */}}
{{- define "neurallog-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "neurallog-operator.serviceAccountName" -}}
{{- include "neurallog-operator.fullname" . -}}
{{- end -}}

{{- define "neurallog-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "neurallog-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "neurallog-operator.selectorLabels" . }}
app.kubernetes.io/part-of: neurallog
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "neurallog-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The series of this release's operator, as a ServiceMonitor scrapes them: its job is the
Service's name. */}}
{{- define "neurallog-operator.metricsSelector" -}}
job="{{ include "neurallog-operator.fullname" . }}",namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/* journal.size in bytes: a whole number with an optional Ki, Mi, Gi, Ti, k, M, G or T. */}}
{{- define "neurallog-operator.journalBytes" -}}
{{- $size := toString .Values.journal.size -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- $unit := regexFind "[A-Za-z]+$" $size -}}
{{- $number := trimSuffix $unit $size -}}
{{- if or (not (regexMatch "^[0-9]+$" $number)) (and $unit (not (hasKey $units $unit))) -}}
{{- fail (printf "journal.size %q: the journal alert needs a whole number with an optional Ki, Mi, Gi, Ti, k, M, G or T" $size) -}}
{{- end -}}
{{- if $unit -}}
{{- mul (int64 $number) (int64 (get $units $unit)) -}}
{{- else -}}
{{- int64 $number -}}
{{- end -}}
{{- end -}}
