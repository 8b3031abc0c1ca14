{{/*
The labels every object of the release carries (Helm's usual ones). The pod
templates and selectors keep the manifests' app.kubernetes.io/name alone, so
that they stay those of config/.
*/}}
{{- define "trellis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trellis
{{- end }}

{{/*
The metadata of a namespaced object: trellis.metadata (list $ "NAME").
*/}}
{{- define "trellis.metadata" -}}
{{- $root := index . 0 -}}
name: {{ index . 1 }}
namespace: {{ $root.Release.Namespace }}
labels:
  {{- include "trellis.labels" $root | nindent 2 }}
{{- end }}

{{/*
The URL the controller and the proxies reach the release's own control plane
at.
*/}}
{{- define "trellis.serverURL" -}}
https://trellis-server.{{ .Release.Namespace }}.svc:7070
{{- end }}

{{/*
What every workload's pod spec has besides its containers and volumes:
trellis.podSpec (list $ "NAME" .Values.WORKLOAD SECURITYCONTEXT), NAME being
the workload's ServiceAccount and SECURITYCONTEXT the pod's.
*/}}
{{- define "trellis.podSpec" -}}
{{- $root := index . 0 -}}
{{- $w := index . 2 -}}
serviceAccountName: {{ index . 1 }}
{{- with index . 3 }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | toJson }}
  {{- end }}
{{- end }}
{{- with $w.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The container fields every workload's one container has besides its name,
args, env, ports, probes and mounts: trellis.container (list $ .Values.WORKLOAD).
*/}}
{{- define "trellis.container" -}}
{{- $root := index . 0 -}}
{{- $w := index . 1 -}}
image: {{ printf "%s:%s" $root.Values.image.repository ($root.Values.image.tag | default $root.Chart.AppVersion) | toJson }}
{{- with $root.Values.image.pullPolicy }}
imagePullPolicy: {{ . | toJson }}
{{- end }}
{{- with $w.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $w.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The arguments every workload ends with: --log-level when set, then its
extraArgs. trellis.extraArgs (list $ .Values.WORKLOAD).
*/}}
{{- define "trellis.extraArgs" -}}
{{- $root := index . 0 -}}
{{- with $root.Values.logLevel }}
- {{ printf "--log-level=%s" . | toJson }}
{{- end }}
{{- range (index . 1).extraArgs }}
- {{ . | toJson }}
{{- end }}
{{- end }}

{{/*
A ServiceAccount: trellis.serviceAccount (list $ "NAME" .Values.WORKLOAD AUTOMOUNT).
*/}}
{{- define "trellis.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "trellis.metadata" (list (index . 0) (index . 1)) | nindent 2 }}
  {{- with (index . 2).serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- if not (index . 3) }}
automountServiceAccountToken: false
{{- end }}
{{- end }}
