{{/* Names and labels shared by every object. */}}
{{- define "regionguard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "regionguard.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "regionguard.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "regionguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "regionguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The metrics port of a service: metricsPort plus the offset of services/core/metrics.py (status: +5). */}}
{{- define "regionguard.port" -}}
{{- $offsets := dict "health" 0 "router" 1 "replayer" 2 "features" 3 "status" 5 -}}
{{- add .root.Values.metricsPort (get $offsets .service) -}}
{{- end -}}

{{/* The config file: the values' config with metrics reachable from the kubelet and Prometheus. */}}
{{- define "regionguard.config" -}}
{{- $metrics := dict "host" "0.0.0.0" "port" (int .Values.metricsPort) -}}
{{- $config := .Values.config | fromYaml -}}
{{- if hasKey $config "Error" -}}{{- fail (printf "config is not YAML: %s" $config.Error) -}}{{- end -}}
{{- if not $config.regions -}}{{- fail "config.regions is empty: name at least one region (docs/kubernetes.md)" -}}{{- end -}}
{{- $_ := set $config "metrics" (merge $metrics (default dict $config.metrics)) -}}
{{- toYaml $config -}}
{{- end -}}
