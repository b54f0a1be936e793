.PHONY: lint typecheck test bench

lint:
	ruff check .
	ruff format --check .
	lint-imports

typecheck:
	mypy

test:
	pytest -q

bench:
	python -m bench
