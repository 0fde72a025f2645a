{{/*
Names. The full name is the release name when it already contains the chart name (release "datapilot"
gives "datapilot", not "datapilot-datapilot"), cut to 63 characters as Kubernetes names must be.
*/}}
{{- define "datapilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "datapilot.fullname" -}}
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

{{- define "datapilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The API server's Deployment and Service. */}}
{{- define "datapilot.apiName" -}}
{{- printf "%s-api" (include "datapilot.fullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{/* The RayCluster. KubeRay names its head Service "<cluster>-head-svc" and its pods after the cluster. */}}
{{- define "datapilot.rayClusterName" -}}
{{- printf "%s-ray" (include "datapilot.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}

{{/*
The GCS address (HOST:PORT) the API pods' Ray nodes join: ray.address, else the chart's head Service.
The API server itself connects with `--ray-address auto`, to the Ray node of its own pod.
*/}}
{{- define "datapilot.rayAddress" -}}
{{- if .Values.ray.address -}}
{{- .Values.ray.address -}}
{{- else if .Values.ray.createCluster -}}
{{- printf "%s-head-svc:6379" (include "datapilot.rayClusterName" .) -}}
{{- else -}}
{{- fail "ray.createCluster is false: set ray.address to the GCS address of the Ray cluster to join (HOST:6379)" -}}
{{- end -}}
{{- end -}}

{{/*
Ray token authentication (ray.auth): the mode and the token, read from a Secret, for every container that
talks to Ray (head, workers, the autoscaler, the API pods' ray-node and api). Empty when it is off.
*/}}
{{- define "datapilot.rayAuthEnv" -}}
{{- with .Values.ray.auth }}
{{- if .enabled }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key | default "token" }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "datapilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "datapilot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "datapilot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels: every object gets these; "component" says which part it belongs to. */}}
{{- define "datapilot.labels" -}}
helm.sh/chart: {{ include "datapilot.chart" . }}
{{ include "datapilot.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datapilot
{{- end -}}

{{- define "datapilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datapilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "datapilot.apiSelectorLabels" -}}
{{ include "datapilot.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end -}}

{{/* The database URL for one database name, with the password as a $(K8S_SECRET_DB_PASSWORD) reference
that the kubelet fills in from the Secret: the password itself is in no manifest. */}}
{{- define "datapilot.databaseUrl" -}}
{{- $db := .db -}}
{{- $driver := $db.driver | default (ternary "psycopg" "pymysql" (eq $db.type "postgresql")) -}}
{{- $port := $db.port | default (ternary 5432 3306 (eq $db.type "postgresql")) -}}
{{- $url := printf "%s+%s://%s:$(K8S_SECRET_DB_PASSWORD)@%s:%v/%s" $db.type $driver $db.user $db.host $port .name -}}
{{- if $db.query -}}
{{- $url = printf "%s?%s" $url $db.query -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* Environment of every DataPilot container (API server and Ray nodes): the settings file and the home. */}}
{{- define "datapilot.env" -}}
- name: DATAPILOT_CONFIG
  value: /etc/datapilot/datapilot.toml
- name: DATAPILOT_HOME
  value: {{ .Values.persistence.mountPath | quote }}
- name: HOME
  value: /home/datapilot
{{- end -}}

{{/*
The API server's store connections and API keys, on top of datapilot.env. Secrets only ever come in by
secretKeyRef; a value that needs one (a database URL, the JSON list of keys) refers to it as $(VAR), which
the kubelet expands from a variable defined earlier in the list.
*/}}
{{- define "datapilot.apiEnv" -}}
{{- $db := .Values.database -}}
{{- if ne $db.type "sqlite" }}
{{- if $db.urlKey }}
- name: DATAPILOT_CACHE__STORE__SQL_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.urlKey }}
- name: DATAPILOT_DATA__METADATA_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.urlKey }}
{{- else }}
- name: K8S_SECRET_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.existingSecret }}
      key: {{ $db.passwordKey }}
- name: DATAPILOT_CACHE__STORE__SQL_URL
  value: {{ include "datapilot.databaseUrl" (dict "db" $db "name" $db.name) | quote }}
- name: DATAPILOT_DATA__METADATA_URL
  value: {{ include "datapilot.databaseUrl" (dict "db" $db "name" (default $db.name $db.metadataName)) | quote }}
{{- end }}
{{- end }}
{{- $m := .Values.milvus -}}
{{- if $m.enabled }}
{{- if $m.cache }}
- name: DATAPILOT_CACHE__STORE__VECTOR
  value: milvus
- name: DATAPILOT_CACHE__STORE__MILVUS_URI
  value: {{ $m.uri | quote }}
{{- if $m.existingSecret }}
- name: DATAPILOT_CACHE__STORE__MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $m.existingSecret }}
      key: {{ $m.tokenKey }}
{{- end }}
{{- end }}
{{- if $m.knowledge }}
- name: DATAPILOT_KNOWLEDGE__VECTOR
  value: milvus
- name: DATAPILOT_KNOWLEDGE__MILVUS_URI
  value: {{ $m.uri | quote }}
{{- if $m.existingSecret }}
- name: DATAPILOT_KNOWLEDGE__MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $m.existingSecret }}
      key: {{ $m.tokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.apiKeys }}
{{- if .existingSecret }}
{{- $refs := list }}
{{- range $i, $key := .keys }}
- name: K8S_SECRET_API_KEY_{{ $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.apiKeys.existingSecret }}
      key: {{ $key }}
{{- $refs = append $refs (printf "\"$(K8S_SECRET_API_KEY_%d)\"" $i) }}
{{- end }}
- name: DATAPILOT_SERVER__API_KEYS
  value: {{ printf "[%s]" (join "," $refs) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Cross-field checks the JSON schema cannot express clearly; each stops the render with a message that
says what to change.
*/}}
{{- define "datapilot.validate" -}}
{{- $p := .Values.persistence -}}
{{- if and $p.enabled (gt (int .Values.api.replicaCount) 1) (not (has "ReadWriteMany" $p.accessModes)) -}}
{{- fail (printf "api.replicaCount is %d but persistence.accessModes has no ReadWriteMany: every API pod mounts the same claim, so use a ReadWriteMany storage class or one replica" (int .Values.api.replicaCount)) -}}
{{- end -}}
{{- if regexMatch "(?im)^\\s*[\"']?[A-Za-z0-9_.\"'-]*(password|passwd|token|api_keys?|secret)[\"']?\\s*=" .Values.config.extraToml -}}
{{- fail "config.extraToml sets a password, token or API key: it is stored in a ConfigMap. Use apiKeys.existingSecret, database.existingSecret or milvus.existingSecret (Secrets) instead" -}}
{{- end -}}
{{- $db := .Values.database -}}
{{- if ne $db.type "sqlite" -}}
{{- if not $db.existingSecret -}}
{{- fail (printf "database.type is %s: set database.existingSecret to a Secret holding the password (key database.passwordKey) or the whole URL (key database.urlKey)" $db.type) -}}
{{- end -}}
{{- if and (not $db.urlKey) (not $db.host) -}}
{{- fail (printf "database.type is %s: set database.host (or database.urlKey, a Secret key holding the whole URL)" $db.type) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.milvus.enabled (not .Values.milvus.uri) -}}
{{- fail "milvus.enabled is true: set milvus.uri (e.g. http://milvus.milvus.svc.cluster.local:19530)" -}}
{{- end -}}
{{- if and .Values.milvus.enabled (not .Values.milvus.cache) (not .Values.milvus.knowledge) -}}
{{- fail "milvus.enabled is true but neither milvus.cache nor milvus.knowledge is: enable one, or disable milvus" -}}
{{- end -}}
{{- if and (eq .Values.runtime "ray") (not .Values.ray.createCluster) (not .Values.ray.address) -}}
{{- fail "ray.createCluster is false: set ray.address to the GCS address of the Ray cluster to join (HOST:6379)" -}}
{{- end -}}
{{- if and .Values.ray.auth .Values.ray.auth.enabled (not .Values.ray.auth.existingSecret) -}}
{{- fail "ray.auth.enabled is true: set ray.auth.existingSecret to a Secret holding the Ray token (key ray.auth.key), e.g. kubectl create secret generic datapilot-ray-token --from-literal=token=$(openssl rand -hex 32)" -}}
{{- end -}}
{{- if eq .Values.runtime "ray" -}}
{{- $p := .Values.api.rayNode.ports -}}
{{- $min := int $p.minWorker -}}
{{- $max := int $p.maxWorker -}}
{{- if lt $max $min -}}
{{- fail (printf "api.rayNode.ports: maxWorker (%d) is below minWorker (%d)" $max $min) -}}
{{- end -}}
{{- if gt (add (sub $max $min) 1) 64 -}}
{{- fail (printf "api.rayNode.ports: %d worker ports (%d-%d); keep the range to 64 ports at most, each is a containerPort" (add (sub $max $min) 1) $min $max) -}}
{{- end -}}
{{- $fixed := list (int .Values.api.port) (int $p.nodeManager) (int $p.objectManager) (int $p.dashboardAgentGrpc) (int $p.runtimeEnvAgent) (int $p.dashboardAgentListen) (int $p.metricsExport) -}}
{{- if ne (len $fixed) (len (uniq $fixed)) -}}
{{- fail (printf "api.rayNode.ports and api.port must all differ: %v" $fixed) -}}
{{- end -}}
{{- range $fixed -}}
{{- if and (ge . $min) (le . $max) -}}
{{- fail (printf "api.rayNode.ports: port %d lies in the worker port range %d-%d" . $min $max) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.runtime "ray") .Values.ray.createCluster (not .Values.ray.workerGroups) -}}
{{- fail "ray.workerGroups is empty: the model actors need at least one worker group (the head has num-cpus 0)" -}}
{{- end -}}
{{- range .Values.ray.workerGroups -}}
{{- if lt (int .maxReplicas) (int .minReplicas) -}}
{{- fail (printf "ray.workerGroups %s: maxReplicas (%d) is below minReplicas (%d)" .name (int .maxReplicas) (int .minReplicas)) -}}
{{- end -}}
{{- if or (lt (int .replicas) (int .minReplicas)) (gt (int .replicas) (int .maxReplicas)) -}}
{{- fail (printf "ray.workerGroups %s: replicas (%d) must lie between minReplicas (%d) and maxReplicas (%d)" .name (int .replicas) (int .minReplicas) (int .maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
