# Developer entry points. Quick start: `make run` (stack + demo) and `make test`.
PYTHON ?= python
KAFKA_LIBS := .local/kafka/libs

.PHONY: install jars up down status run demo test test-reliability test-broker-restarts bench lint format

install:  ## Python package and dev tools (pip skips what is installed)
	@$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[dev]'

jars:  ## Kafka broker jars from Maven Central (cached under .local/kafka/libs)
	@$(PYTHON) -c "from deploy.local.kafka import ensure_jars; ensure_jars()"

up: install jars  ## Kafka, PostgreSQL, topics, migrations, program and every service
	$(PYTHON) -m deploy.cli stack up

down:  ## stop everything `make up` started
	$(PYTHON) -m deploy.cli stack down

status:
	$(PYTHON) -m deploy.cli stack status

run: up demo  ## the stack plus a demo load, with a summary of what happened

demo:
	$(PYTHON) -m deploy.cli demo

test: install jars  ## the suite against real Kafka and PostgreSQL (the fault tests under load: below)
	$(PYTHON) -m pytest tests -q -m "not reliability and not broker_restart" --durations=15

test-reliability: install jars  ## processes killed, restarted or slowed under load (a .ci/run stage of its own)
	$(PYTHON) -m pytest tests -q -m "reliability and not broker_restart" --durations=5

test-broker-restarts: install jars  ## broker stopped 3x for 12-42 s under load (a .ci/run stage of its own)
	$(PYTHON) -m pytest tests -q -m broker_restart

bench: install jars  ## every benchmark; faust-streaming (the runtime's comparison) comes with .[bench]
	@$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[dev,bench]'
	$(PYTHON) -m bench

lint:
	ruff check .

format:
	ruff format .

.PHONY: dashboard-assets
dashboard-assets:  ## rebuild dashboard/static/vendor/chart.umd.js from the npm registry (committed)
	cd dashboard/frontend && npm ci --no-audit --no-fund && npm run build

# ---- containers (deploy/docker, deploy/compose; docs/deploy.md "Containers and compose")
COMPOSE ?= docker compose
COMPOSE_PROJECT ?= loyalty
COMPOSE_CMD = $(COMPOSE) -p $(COMPOSE_PROJECT) -f deploy/compose/compose.yaml

.PHONY: base-image image images compose-up compose-down

base-image:  ## loyalty-debian:bookworm (debootstrap) + loyalty-python:3.11-bookworm, no registry needed
	deploy/docker/build.sh base

image:  ## loyalty-engine:dev, every service; public python base when reachable, else `base-image`
	PYTHON=$(PYTHON) deploy/docker/build.sh app

images:  ## the service image, the Kafka image (our Maven jars) and the PostgreSQL image
	PYTHON=$(PYTHON) deploy/docker/build.sh all

compose-up: images  ## the compose stack, detached; waits until every service is healthy
	$(COMPOSE_CMD) up -d --wait
	@echo "ingest   http://$$($(COMPOSE_CMD) port ingest 8080)  (API key dev-key)"
	@echo "receiver http://$$($(COMPOSE_CMD) port receiver 8080)/received"
	@echo "postgres $$($(COMPOSE_CMD) port postgres 5432)  (loyalty / loyalty, database loyalty)"

compose-down:  ## stop and remove the stack's containers (volumes stay: add `-v` by hand to drop them)
	$(COMPOSE_CMD) down --remove-orphans
