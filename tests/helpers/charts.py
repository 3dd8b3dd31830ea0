"""Chart templates the Helm tests share."""

from ocigitops.puller.devcluster import HELM_TEST_FAIL_ANNOTATION

#: A Deployment named after the release, which kwok makes Ready.
DEPLOYMENT_TEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: app
        image: registry.example/app:1
"""


#: A ``helm test`` hook Pod that fails when the values set ``failTest`` (the dev cluster's
#: kwok stages fail a Pod with that annotation).
TEST_HOOK_TEMPLATE = """apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    "helm.sh/hook": test
    {{- if .Values.failTest }}
    "FAIL_ANNOTATION": "true"
    {{- end }}
spec:
  restartPolicy: Never
  containers:
  - name: t
    image: registry.example/test:1
""".replace("FAIL_ANNOTATION", HELM_TEST_FAIL_ANNOTATION)
