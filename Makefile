# Developer entry points. Quick start: `make run` (stack + demo) and `make test`.
PYTHON ?= python
KAFKA_LIBS := .local/kafka/libs

.PHONY: install jars up down status run demo test bench lint format

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

test: install jars  ## the whole suite against real Kafka and PostgreSQL
	$(PYTHON) -m pytest tests -q

bench: install jars  ## every benchmark; faust-streaming (the runtime's comparison) comes with .[bench]
	@$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[dev,bench]'
	$(PYTHON) -m bench

lint:
	ruff check .

format:
	ruff format .
