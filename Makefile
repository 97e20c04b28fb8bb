PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo serve test test-slow test-browser lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,serve,quantize]'
	touch $(STAMP)

demo: venv
	$(BIN)/lasagna segment examples/shapes.png --classes-file examples/shapes-classes.txt --out demo-out
	@echo "open demo-out/shapes/overlay.png to see the masks (demo-out/shapes/result.json has them as COCO RLE)"

serve: venv
	$(BIN)/lasagna serve

test: venv
	$(BIN)/ruff check src tests benchmarks tools docs
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-slow: venv
	$(BIN)/pip install -q -e '.[dev,deepspeed]'
	$(BIN)/python -m pytest -m slow

# Headless Chromium from Debian (root installs it when missing), driven by Selenium; screenshots go to
# $LASAGNA_BROWSER_ARTIFACTS when set.
test-browser: venv
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver)
	$(BIN)/pip install -q -e '.[dev,serve,browser]'
	$(BIN)/python -m pytest -m browser

lint: venv
	$(BIN)/ruff check src tests benchmarks tools docs
	$(BIN)/ruff format --check src tests benchmarks tools docs

format: venv
	$(BIN)/ruff format src tests benchmarks tools docs
	$(BIN)/ruff check --fix src tests benchmarks tools docs

clean:
	rm -rf $(VENV) build dist demo-out
