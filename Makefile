.PHONY: lint typecheck test bench

lint:
	ruff check .
	ruff format --check .

typecheck:
	mypy

test:
	pytest -q

bench:
	python -m bench
