{{/*
Names, labels, images and the shared flags of the sluice chart. Every template takes its names and labels from
here, so renaming or relabelling is one change.
*/}}

{{/* The chart name, 63 characters at most. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: the release name, plus the chart name unless the release already has it. */}}
{{- define "sluice.fullname" -}}
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

{{/* Component object names (the fullname is cut so that the suffix always fits). */}}
{{- define "sluice.controller.fullname" -}}
{{- printf "%s-controller" (include "sluice.fullname" . | trunc 52 | trimSuffix "-") -}}
{{- end -}}
{{- define "sluice.dataplane.fullname" -}}
{{- printf "%s-dataplane" (include "sluice.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}
{{- define "sluice.etcd.fullname" -}}
{{- printf "%s-etcd" (include "sluice.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}
{{- define "sluice.etcd.headless" -}}
{{- printf "%s-headless" (include "sluice.etcd.fullname" .) -}}
{{- end -}}

{{/* chart label value: name-version. */}}
{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select one component's pods; they never change after install. Call with (dict "ctx" $ "component" "dataplane"). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of one component's objects. Call with (dict "ctx" $ "component" "dataplane"). */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" .ctx }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ServiceAccount names. */}}
{{- define "sluice.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "sluice.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}
{{- define "sluice.dataplane.serviceAccountName" -}}
{{- if .Values.dataplane.serviceAccount.create -}}
{{- default (include "sluice.dataplane.fullname" .) .Values.dataplane.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.dataplane.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image of one component: its own repository/tag/digest, else the shared image, else the appVersion tag.
Call with (dict "ctx" $ "image" .Values.controller.image). */}}
{{- define "sluice.image" -}}
{{- $shared := .ctx.Values.image -}}
{{- $repo := default $shared.repository .image.repository -}}
{{- $digest := default $shared.digest .image.digest -}}
{{- $tag := default (default .ctx.Chart.AppVersion $shared.tag) .image.tag -}}
{{- if $digest -}}
{{- printf "%s@%s" $repo $digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The etcd client URLs both components connect to, comma-separated. */}}
{{- define "sluice.etcd.endpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "sluice.etcd.fullname" . -}}
{{- $headless := include "sluice.etcd.headless" . -}}
{{- $urls := list -}}
{{- $scheme := ternary "https" "http" (and .Values.etcd.tls.enabled true) -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-%d.%s.%s.svc:2379" $scheme $name $i $headless $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- if not .Values.etcd.external.endpoints -}}
{{- fail "etcd.enabled is false: set etcd.external.endpoints to the client URLs of your etcd" -}}
{{- end -}}
{{- join "," .Values.etcd.external.endpoints -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the components authenticate to etcd with client certificates: the in-chart etcd with
etcd.tls.enabled, or an external etcd with etcd.external.tls.enabled. */}}
{{- define "sluice.etcd.tls" -}}
{{- if .Values.etcd.enabled -}}
{{- if .Values.etcd.tls.enabled -}}
{{- if ne (empty .Values.etcd.tls.existingServerSecret) (empty .Values.etcd.tls.existingClientSecret) -}}
{{- fail "etcd.tls.existingServerSecret and etcd.tls.existingClientSecret go together" -}}
{{- end -}}
true
{{- end -}}
{{- else if .Values.etcd.external.tls.enabled -}}
{{- if not .Values.etcd.external.tls.secretName -}}
{{- fail "etcd.external.tls.enabled is true: set etcd.external.tls.secretName to the Secret with the client certificate" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The Secrets the in-chart etcd's certificates are in: the server's (also its peer certificate) and the
components' client certificate; generated by etcd/certificates.yaml unless existing ones are named. */}}
{{- define "sluice.etcd.serverSecret" -}}
{{- .Values.etcd.tls.existingServerSecret | default (printf "%s-server-tls" (include "sluice.etcd.fullname" .)) -}}
{{- end -}}
{{- define "sluice.etcd.clientSecret" -}}
{{- if .Values.etcd.enabled -}}
{{- .Values.etcd.tls.existingClientSecret | default (printf "%s-client-tls" (include "sluice.etcd.fullname" .)) -}}
{{- else -}}
{{- .Values.etcd.external.tls.secretName -}}
{{- end -}}
{{- end -}}

{{/* Where the etcd client certificate Secret is mounted. */}}
{{- define "sluice.etcd.tlsDir" -}}/etc/sluice/etcd-tls{{- end -}}

{{/* The etcd flags both components take. */}}
{{- define "sluice.etcd.args" -}}
- --etcd-endpoints={{ include "sluice.etcd.endpoints" . }}
- --etcd-prefix={{ .Values.etcd.prefix }}
{{- if include "sluice.etcd.tls" . }}
{{- $dir := include "sluice.etcd.tlsDir" . }}
{{- $keys := ternary (dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key") (dict "ca" .Values.etcd.external.tls.caKey "cert" .Values.etcd.external.tls.certKey "key" .Values.etcd.external.tls.keyKey) (and .Values.etcd.enabled true) }}
- --etcd-ca-file={{ $dir }}/{{ $keys.ca }}
- --etcd-cert-file={{ $dir }}/{{ $keys.cert }}
- --etcd-key-file={{ $dir }}/{{ $keys.key }}
{{- end }}
{{- end -}}

{{/* The volume and mount of the etcd client certificate Secret (nothing without TLS). */}}
{{- define "sluice.etcd.tlsVolume" -}}
{{- if include "sluice.etcd.tls" . }}
- name: etcd-tls
  secret:
    secretName: {{ include "sluice.etcd.clientSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "sluice.etcd.tlsVolumeMount" -}}
{{- if include "sluice.etcd.tls" . }}
- name: etcd-tls
  mountPath: {{ include "sluice.etcd.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod anti-affinity from a mode ("soft", "hard", "none") unless explicit affinity is given.
Call with (dict "ctx" $ "component" "dataplane" "mode" .podAntiAffinity "affinity" .affinity). */}}
{{- define "sluice.affinity" -}}
{{- if .affinity -}}
{{- toYaml .affinity -}}
{{- else if eq .mode "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sluice.selectorLabels" . | nindent 12 }}
{{- else if eq .mode "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "sluice.selectorLabels" . | nindent 10 }}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints, with the component's selector added where none is given.
Call with (dict "ctx" $ "component" "dataplane" "constraints" .topologySpreadConstraints). */}}
{{- define "sluice.topologySpread" -}}
{{- $out := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not $c.labelSelector -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "sluice.selectorLabels" $ | fromYaml)) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The admin listeners' bearer token (metrics.auth): its Secret, flag, volume and mount (nothing when off). */}}
{{- define "sluice.adminToken.secret" -}}
{{- .Values.metrics.auth.existingSecret | default (printf "%s-admin-token" (include "sluice.fullname" .)) -}}
{{- end -}}
{{- define "sluice.adminToken.args" -}}
{{- if .Values.metrics.auth.enabled }}
- --admin-token-file=/etc/sluice/admin-token/token
{{- end }}
{{- end -}}
{{- define "sluice.adminToken.volume" -}}
{{- if .Values.metrics.auth.enabled }}
- name: admin-token
  secret:
    secretName: {{ include "sluice.adminToken.secret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "sluice.adminToken.volumeMount" -}}
{{- if .Values.metrics.auth.enabled }}
- name: admin-token
  mountPath: /etc/sluice/admin-token
  readOnly: true
{{- end }}
{{- end -}}

{{/* The credential keyring (credentialKeyring): its Secret, flag, volume and mount (nothing when off). */}}
{{- define "sluice.keyring.secret" -}}
{{- .Values.credentialKeyring.existingSecret | default (printf "%s-credential-keyring" (include "sluice.fullname" .)) -}}
{{- end -}}
{{- define "sluice.keyring.args" -}}
{{- if .Values.credentialKeyring.enabled }}
- --credential-keyring=/etc/sluice/keyring/keyring
{{- end }}
{{- end -}}
{{- define "sluice.keyring.volume" -}}
{{- if .Values.credentialKeyring.enabled }}
- name: credential-keyring
  secret:
    secretName: {{ include "sluice.keyring.secret" . }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "sluice.keyring.volumeMount" -}}
{{- if .Values.credentialKeyring.enabled }}
- name: credential-keyring
  mountPath: /etc/sluice/keyring
  readOnly: true
{{- end }}
{{- end -}}
