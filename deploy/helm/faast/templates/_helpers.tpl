{{- define "faast.name" -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- end }}

{{- define "faast.labels" -}}
app.kubernetes.io/name: faast
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{- define "faast.selector" -}}
app.kubernetes.io/name: faast
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "faast.balancerSelector" -}}
app.kubernetes.io/name: faast
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: balancer
{{- end }}
