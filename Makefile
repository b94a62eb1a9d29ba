# Two commands on a fresh machine (see README.md):
#   make demo  -- set everything up and run the simulated inspection cell
#   make test  -- set up what is missing and run every test
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh
DEMO_OUT ?= reports/demo
PYTEST_ARGS ?=

.PHONY: help setup demo test bench clean
help:
	@echo "make demo   set up (venv, ROS 2 wheels, colcon build) and run the simulated inspection cell"
	@echo "make test   set up what is missing and run every test"
	@echo "make bench  run the benchmark scripts (prints figures)"
	@echo "make clean  remove the venv and the colcon workspace"

setup:
	@bash scripts/setup_env.sh

demo: setup
	@$(ENV) && python -m cosarad_ros demo --out $(DEMO_OUT)

test: setup
	@$(ENV) && python -m pytest -q $(PYTEST_ARGS)

bench: setup
	@$(ENV) && for b in benchmarks/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

clean:
	rm -rf .venv .ws
