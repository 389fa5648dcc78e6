# The two commands: `make run` and `make test`. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EVENT  ?= events/stop-running.json

# aws-sam-cli pins its own boto3 and pydantic: it lives in a venv of its own.
SAM_CLI_VERSION := 1.170.0
SAM_VENV  := .venv-sam
SAM       := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
# checkov pins its own cfn-lint and boto3: a venv of its own too.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV  := .venv-checkov
CHECKOV       := $(CHECKOV_VENV)/bin/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)
# The Lambda runtime's CPython, to compile the artifacts' bytecode (scripts/runtime-python.sh).
RUNTIME_PYTHON_VERSION := 3.13
RUNTIME_PYTHON := .runtime-python/bin/python$(RUNTIME_PYTHON_VERSION)
SAM_BUILD_DIR ?= .aws-sam/build
# Offline: sam and cfn-lint need a region; dummy credentials keep them off any real account.
OFFLINE_AWS := AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline \
	AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0

.PHONY: help install sam-install checkov-install runtime-python build run invoke sam-local test unit lint \
	format clean reliability reliability-fast fleet bench bench-smoke rotate-key reset-conversation smoke \
	openhands-install test-openhands agent-server-install test-agent-server

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

sam-install: $(SAM_STAMP)

$(SAM_STAMP):
	rm -rf $(SAM_VENV)
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check 'aws-sam-cli==$(SAM_CLI_VERSION)'
	touch $(SAM_STAMP)

checkov-install: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

runtime-python: $(RUNTIME_PYTHON)

$(RUNTIME_PYTHON): scripts/runtime-python.sh
	scripts/runtime-python.sh .runtime-python

build: sam-install runtime-python ## sam build: the arm64 layer and the function, bytecode included
	$(OFFLINE_AWS) RUNTIME_PYTHON=$(CURDIR)/$(RUNTIME_PYTHON) REQUIRE_BYTECODE=1 \
	  COMPILE_BYTECODE=$(CURDIR)/scripts/compile-bytecode.sh \
	  PIP="$(CURDIR)/$(SAM_VENV)/bin/python -m pip" \
	  $(SAM) build --template template.yaml --build-dir $(SAM_BUILD_DIR)

run: install ## the stop route on http://localhost:3000 against an embedded AWS emulation
	$(BIN)/python -m local.run

invoke: install ## one sample event through the real handler: make invoke EVENT=events/stop-running.json
	$(BIN)/python -m local.invoke $(EVENT)

# The real `sam local` (Docker needed) against `make run`'s emulation: writes the --env-vars
# file (endpoints a container reaches) and prints the commands. SAM_LOCAL_HOST: the address
# the container reaches `make run`'s moto by: 127.0.0.1 with the printed --docker-network host
# (Linux), host.docker.internal on Docker Desktop.
SAM_LOCAL_ENV ?= .aws-sam/sam-local-env.json
SAM_LOCAL_HOST ?= 127.0.0.1
sam-local: install ## write the sam local --env-vars file for `make run`'s emulation; print sam local invoke/start-api
	$(BIN)/python -m local.sam_local --event $(EVENT) --env-vars $(SAM_LOCAL_ENV) \
	  --host $(SAM_LOCAL_HOST) --build-dir $(SAM_BUILD_DIR)

lint: install sam-install checkov-install ## ruff, mypy, cfn-lint, sam validate, and checkov on the transformed template
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(OFFLINE_AWS) $(SAM) validate --lint --template template.yaml
	@mkdir -p .aws-sam
	$(OFFLINE_AWS) $(SAM_VENV)/bin/python tests/template/transform.py template.yaml > .aws-sam/transformed.json
	# Every finding is fixed or skipped in template.yaml's Metadata with its reason.
	$(CHECKOV) --file .aws-sam/transformed.json --framework cloudformation --skip-download --compact --quiet

unit: install ## the test suite alone: no sam build; template and checkov tests skip without their tools
	$(BIN)/pytest

test: lint sam-install checkov-install runtime-python ## lint, every test, the sam build, a small load run
	$(BIN)/pytest -m "not full"
	$(MAKE) --no-print-directory reliability-fast

rotate-key: install ## a new session key: make rotate-key SECRET_ID=<arn> [KEY_STDIN=1 < key] [REVOKE=1: no previous key]
	@test -n "$(SECRET_ID)" || { echo "usage: make rotate-key SECRET_ID=<SessionApiKeySecretArn> [KEY_STDIN=1 < key.txt] [REVOKE=1]"; exit 2; }
	@# REVOKE=1: no instance accepts the old key as the previous one; a warm instance that
	@# cached it as the current one keeps it up to KEY_CACHE_SECONDS (docs/operations.md).
	$(BIN)/python -m scripts.rotate_session_key --secret-id '$(SECRET_ID)' $(if $(REVOKE),--revoke-previous) $(if $(KEY_STDIN),--key-stdin)

reset-conversation: install ## a row no worker can read (ARCHIVED, lowercase...) back to STOPPED: make reset-conversation TABLE=<name> ID=<id> [FORCE=1]
	@test -n "$(TABLE)" -a -n "$(ID)" || { echo "usage: make reset-conversation TABLE=<ConversationsTableName> ID=<conversation id> [FORCE=1]"; exit 2; }
	$(BIN)/python -m scripts.reset_conversation --table '$(TABLE)' --conversation-id '$(ID)' $(if $(FORCE),--force)

smoke: install ## after a deploy: KEY=<key> make smoke URL=<StopUrl> [STACK=<name>] (or the key on stdin)
	@test -n "$(URL)" || { echo "usage: KEY=<session key> make smoke URL=<StopUrl> [STACK=<stack name>]  (or: ... | make smoke URL=...)"; exit 2; }
	@# The key never reaches a command line another process could read: not make's (KEY=
	@# there is refused), not the script's. It comes from the environment or standard input.
	@if [ "$(origin KEY)" = "command line" ]; then \
	  echo "smoke: KEY=... on make's command line shows in ps: export KEY, or pipe the key in" >&2; exit 2; fi
	$(BIN)/python -m scripts.smoke --url '$(URL)' $(if $(STACK),--stack '$(STACK)') $(if $(WAIT),--wait $(WAIT))

# A real OpenHands server as the worker (issue 12): its own venv, Python 3.12, openhands-ai
# and the web stack it imports with (tests/openhands/constraints.txt), then this project.
# (pyenv's shim may exist yet refuse to run: the first interpreter that answers is used.)
OPENHANDS_PYTHON ?= $(firstword $(foreach p,$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) \
	python3.12,$(shell $(p) -c 'print("$(p)")' 2>/dev/null)))
OH_VENV  := .venv-openhands
OH_BIN   := $(OH_VENV)/bin
OH_STAMP := $(OH_VENV)/.installed
OH_CONSTRAINTS := tests/openhands/constraints.txt

openhands-install: $(OH_STAMP)

$(OH_STAMP): pyproject.toml $(OH_CONSTRAINTS)
	$(OPENHANDS_PYTHON) -m venv $(OH_VENV)
	$(OH_BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(OH_BIN)/pip install --quiet --disable-pip-version-check -r $(OH_CONSTRAINTS)
	$(OH_BIN)/pip install --quiet --disable-pip-version-check -c $(OH_CONSTRAINTS) \
	  -e '.[openhands,api]' 'moto[server]>=5.0' 'pytest>=8' pyyaml
	touch $(OH_STAMP)

test-openhands: openhands-install ## a real OpenHands 0.53 server as the worker: tests/openhands
	# libtmux (an OpenHands dependency) ships a pytest plugin that newer pytest refuses.
	$(OH_BIN)/pytest tests/openhands -p no:cacheprovider -p no:libtmux \
	  -W ignore::DeprecationWarning

# A real OpenHands 1.x agent-server as the worker (issue 21), with this project's sidecar: a
# venv of its own (Python 3.12, openhands-agent-server and its pins in
# tests/agent_server/constraints.txt), apart from the 0.53 one.
AS_VENV  := .venv-agent-server
AS_BIN   := $(AS_VENV)/bin
AS_STAMP := $(AS_VENV)/.installed
AS_CONSTRAINTS := tests/agent_server/constraints.txt

agent-server-install: $(AS_STAMP)

$(AS_STAMP): pyproject.toml $(AS_CONSTRAINTS)
	$(OPENHANDS_PYTHON) -m venv $(AS_VENV)
	$(AS_BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(AS_BIN)/pip install --quiet --disable-pip-version-check -r $(AS_CONSTRAINTS)
	$(AS_BIN)/pip install --quiet --disable-pip-version-check -c $(AS_CONSTRAINTS) \
	  -e '.[agent-server,api]' 'moto[server]>=5.0' 'pytest>=8' pyyaml
	touch $(AS_STAMP)

test-agent-server: agent-server-install ## a real OpenHands 1.x agent-server with the sidecar: tests/agent_server
	$(AS_BIN)/pytest tests/agent_server -p no:cacheprovider -W ignore::DeprecationWarning

reliability: install ## faults, races, hostile input, key, a 10,000-stop load: writes docs/reliability.md
	$(BIN)/python -m local.reliability --output docs/reliability.md

reliability-fast: install ## the part pytest does not run: a bounded 500-stop load; table to stdout
	$(BIN)/python -m local.reliability --fast --load-only

fleet: install ## 8 workers, 400 conversations, a SIGKILL, a hang, skewed clocks: docs/reliability.md and docs/performance.md
	$(BIN)/python -m local.fleet --output docs/reliability.md --costs docs/performance.md

# BENCH_ARGS: e.g. --runs 3 --update-docs (docs/performance.md), or --python dev (this venv's 3.11).
bench: install runtime-python ## our function against two peers on the Lambda runtime's CPython 3.13
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-smoke: install runtime-python ## the same with a few runs of each: CI checks that it runs
	$(BIN)/python -m benchmarks.run --smoke

help: ## this list
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sort \
	  | awk -F ':.*## ' '{ printf "  make %-18s %s\n", $$1, $$2 }'

format: install ## ruff format and ruff's fixes, in place
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove every venv, build and cache this Makefile made
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) $(OH_VENV) $(AS_VENV) .runtime-python .aws-sam .pytest_cache .mypy_cache .ruff_cache .bench
