{{/*
Names, labels and the pieces several templates share. Each helper is used
by name from the templates; nothing here renders a resource.
*/}}

{{- define "dw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dw.fullname" -}}
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

{{- define "dw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when image.digest is set, else repository:tag. */}}
{{- define "dw.image" -}}
{{- if .Values.image.digest -}}
{{- if not (hasPrefix "sha256:" .Values.image.digest) -}}
{{- fail (printf "image.digest %q: expected sha256:<64 hex digits>" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The six channels, in CONTRACT order. */}}
{{- define "dw.channels" -}}
URIDONGNETV GINITV RINGOBIZ INSTAGRAM NAVER KAKAO
{{- end -}}

{{/* Where mounted CA files live (outside the ConfigMap's directory). */}}
{{- define "dw.kafkaCaPath" -}}
/var/run/secrets/distribution-worker/kafka-ca/{{ .Values.kafkaSecurity.caSecret.key }}
{{- end -}}
{{- define "dw.pgCaPath" -}}
/var/run/secrets/distribution-worker/pg-ca/{{ .Values.postgresSecurity.caSecret.key }}
{{- end -}}

{{/* The Secret the chart creates or the one named; "" when neither. */}}
{{- define "dw.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.create -}}
{{- include "dw.fullname" . -}}
{{- end -}}
{{- end -}}

{{/*
The most replicas any autoscaler may run: maxReplicas, else the partition
count; never more than the partition count (idle consumers help nobody).
*/}}
{{- define "dw.maxReplicas" -}}
{{- $parts := int .Values.autoscaling.partitionCount -}}
{{- $max := int (.Values.autoscaling.maxReplicas | default $parts) -}}
{{- if gt $max $parts -}}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds autoscaling.partitionCount (%d): consumers beyond the partition count sit idle" $max $parts) -}}
{{- end -}}
{{- if lt $max (int .Values.autoscaling.minReplicas) -}}
{{- fail "autoscaling.minReplicas is larger than the most replicas allowed" -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/*
The PromQL the KEDA prometheus trigger scales on: the backlog of this
release's pods, each partition counted once (max by partition: a pod that
has just lost a partition may still show it until its next scrape).
autoscaling.keda.prometheus.query replaces it.
*/}}
{{- define "dw.backlogQuery" -}}
{{- with .Values.autoscaling.keda.prometheus.query -}}
{{- . -}}
{{- else -}}
sum(max by (partition) (dw_consumer_backlog{namespace="{{ .Release.Namespace }}",service="{{ include "dw.fullname" . }}"}))
{{- end -}}
{{- end -}}

{{/* The pod's grace period: longer than the worker's drain timeout. */}}
{{- define "dw.gracePeriod" -}}
{{- $drain := div (int64 .Values.config.worker.drain_timeout_ms) 1000 -}}
{{- if .Values.terminationGracePeriodSeconds -}}
{{- if le (int64 .Values.terminationGracePeriodSeconds) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be larger than config.worker.drain_timeout_ms / 1000 (%d)" .Values.terminationGracePeriodSeconds $drain) -}}
{{- end -}}
{{- int64 .Values.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $drain 15 -}}
{{- end -}}
{{- end -}}

{{/* KEDA's names for the SASL mechanism. */}}
{{- define "dw.kedaSasl" -}}
{{- $m := upper .Values.kafkaSecurity.saslMechanism -}}
{{- if eq $m "PLAIN" -}}plaintext
{{- else if eq $m "SCRAM-SHA-256" -}}scram_sha256
{{- else if eq $m "SCRAM-SHA-512" -}}scram_sha512
{{- else if eq $m "" -}}none
{{- else -}}{{ fail (printf "kafkaSecurity.saslMechanism %q has no KEDA equivalent; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or \"\"" $m) }}
{{- end -}}
{{- end -}}

{{- define "dw.kafkaTls" -}}
{{- if has (upper .Values.kafkaSecurity.protocol) (list "SSL" "SASL_SSL") -}}enable{{- else -}}disable{{- end -}}
{{- end -}}

{{/*
A secret's source as {name, key}: secrets.refs.<item> when given, else the
chart's Secret (or existingSecret) with the chart's key name. Called with
(dict "root" $ "item" "pgDsn" "key" "pg-dsn"); renders YAML for secretKeyRef.
*/}}
{{- define "dw.secretRef" -}}
{{- $ref := get (.root.Values.secrets.refs | default dict) .item -}}
{{- if $ref -}}
name: {{ required (printf "secrets.refs.%s.name" .item) $ref.name }}
key: {{ required (printf "secrets.refs.%s.key" .item) $ref.key }}
{{- else -}}
name: {{ required "secrets.existingSecret or secrets.create is needed for the worker's secrets" (include "dw.secretName" .root) }}
key: {{ .key }}
{{- end -}}
{{- end -}}

{{/* Refuses secrets where a ConfigMap would hold them. */}}
{{- define "dw.checkNoSecretsInConfig" -}}
{{- $cfg := .Values.config -}}
{{- if and $cfg.postgres (hasKey $cfg.postgres "dsn") -}}
{{- fail "config.postgres.dsn would land in a ConfigMap: put the DSN in secrets.pgDsn (or an existing Secret)" -}}
{{- end -}}
{{- range $name := splitList " " (include "dw.channels" .) -}}
{{- $ch := get ($cfg.channels | default dict) $name -}}
{{- if and $ch (hasKey $ch "token") -}}
{{- fail (printf "config.channels.%s.token would land in a ConfigMap: put it in secrets.channelTokens.%s" $name $name) -}}
{{- end -}}
{{- end -}}
{{- $props := concat ($cfg.kafka.properties | default list) ($cfg.kafka.consumer_properties | default list) ($cfg.kafka.producer_properties | default list) -}}
{{- range $p := $props -}}
{{- if or (hasPrefix "sasl.password=" $p) (hasPrefix "ssl.key.password=" $p) (hasPrefix "sasl.oauthbearer.client.secret=" $p) -}}
{{- fail (printf "%s would land in a ConfigMap: use secrets.kafkaSaslPassword" (first (splitList "=" $p))) -}}
{{- end -}}
{{- end -}}
{{- if and $cfg.kafka (hasKey $cfg.kafka "sasl_password") -}}
{{- fail "config.kafka.sasl_password would land in a ConfigMap: use secrets.kafkaSaslPassword" -}}
{{- end -}}
{{- end -}}

{{/*
One libconfig value: a quoted string, a number (whole numbers without a
decimal point), a boolean, or a list of those in [ ... ] (an empty list;
dw.libconfig.group writes others one element a line).
*/}}
{{- define "dw.libconfig.value" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- if eq (float64 (int64 .)) (float64 .) -}}{{- int64 . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else if kindIs "slice" . -}}
[{{- range $i, $e := . -}}{{- if $i -}},{{- end }} {{ include "dw.libconfig.value" $e -}}{{- end }} ]
{{- else -}}
{{- fail (printf "config: cannot write a %s as a libconfig value" (kindOf .)) -}}
{{- end -}}
{{- end -}}

{{/*
A libconfig group's body from a map: (dict "map" M "indent" N). Maps become
nested groups; null values are left out.
*/}}
{{- define "dw.libconfig.group" -}}
{{- $pad := repeat (int .indent) " " -}}
{{- $indent := .indent -}}
{{- range $key, $value := .map -}}
{{- if kindIs "map" $value }}
{{ $pad }}{{ $key }} = {
{{- include "dw.libconfig.group" (dict "map" $value "indent" (add $indent 4)) }}
{{ $pad }}};
{{- else if and (kindIs "slice" $value) $value }}
{{ $pad }}{{ $key }} = [
{{- range $i, $e := $value }}
{{ $pad }}    {{ include "dw.libconfig.value" $e }}{{ if lt (add $i 1) (len $value) }},{{ end }}
{{- end }}
{{ $pad }}];
{{- else if not (kindIs "invalid" $value) }}
{{ $pad }}{{ $key }} = {{ include "dw.libconfig.value" $value }};
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The worker's configuration: .Values.config with the Kafka security
properties added to kafka.properties and the PostgreSQL CA path.
*/}}
{{- define "dw.config" -}}
{{- include "dw.checkNoSecretsInConfig" . -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $kafka := $cfg.kafka -}}
{{- $props := $kafka.properties | default list -}}
{{- with .Values.kafkaSecurity -}}
{{- if .protocol -}}{{- $props = append $props (printf "security.protocol=%s" .protocol) -}}{{- end -}}
{{- if .saslMechanism -}}{{- $props = append $props (printf "sasl.mechanism=%s" .saslMechanism) -}}{{- end -}}
{{- end -}}
{{- if .Values.kafkaSecurity.caSecret.name -}}
{{- $props = append $props (printf "ssl.ca.location=%s" (include "dw.kafkaCaPath" .)) -}}
{{- else if .Values.kafkaSecurity.caLocation -}}
{{- $props = append $props (printf "ssl.ca.location=%s" .Values.kafkaSecurity.caLocation) -}}
{{- end -}}
{{- $_ := set $kafka "properties" $props -}}
{{- if .Values.postgresSecurity.caSecret.name -}}
{{- $_ := set $cfg.postgres "sslrootcert" (include "dw.pgCaPath" .) -}}
{{- end -}}
{{- include "dw.libconfig.group" (dict "map" $cfg "indent" 0) -}}
{{- end -}}
