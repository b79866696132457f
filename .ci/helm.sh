#!/usr/bin/env bash
# CI stage: the Helm chart (deploy/helm/loyalty). Installs helm when missing (built from the Go
# module proxy, about 2 minutes), lints and renders the chart with every values file under
# deploy/helm/loyalty/ci/, then runs tests/deploy/test_helm_chart.py with helm required.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
KUBE_VERSION=1.30.0   # a go-installed helm assumes Kubernetes v1.20 when no cluster is reachable
CHART=deploy/helm/loyalty
PYTHON=${PYTHON:-python}

export PATH="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH"
if ! command -v helm >/dev/null; then
    command -v go >/dev/null || { echo "helm.sh: neither helm nor go is installed" >&2; exit 1; }
    echo "helm.sh: installing helm $HELM_VERSION (go install)"
    start=$SECONDS
    go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "helm.sh: helm installed in $((SECONDS - start))s"
fi
helm version --short

status=0
for values in "$CHART"/ci/*.yaml; do
    echo "== helm lint -f $values"
    helm lint --strict "$CHART" -f "$values" --kube-version "$KUBE_VERSION" || status=1
    echo "== helm template -f $values"
    if out=$(helm template ci "$CHART" -f "$values" --namespace loyalty-ci --kube-version "$KUBE_VERSION"); then
        printf '%s\n' "$out" | grep '^kind:' | sort | uniq -c | sed 's/^/   /'
    else
        status=1
    fi
done

echo "== tests/deploy/test_helm_chart.py"
REQUIRE_HELM=1 "$PYTHON" -m pytest tests/deploy/test_helm_chart.py -q -p no:cacheprovider || status=1
exit $status
