# The commands a person types. `make demo` runs the platform; `make test` runs every test.
.PHONY: demo test check bench kafka-up kafka-down topics install clean

DURATION ?=

install:
	bash scripts/bootstrap.sh

demo: install
	bash scripts/demo.sh $(DURATION)

test:
	bash scripts/test.sh

check: install
	bash scripts/check.sh

bench: install  # BENCH_ARGS=--quick for a fast run
	bash scripts/bench.sh $(BENCH_ARGS)

kafka-up: install
	.venv/bin/caremesh kafka up

kafka-down:
	.venv/bin/caremesh kafka down

topics: kafka-up
	.venv/bin/caremesh topics create

clean: kafka-down
	rm -rf .caremesh
