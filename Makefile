# Every target bootstraps .venv from constraints.txt first (idempotent: re-runs only when
# pyproject.toml or constraints.txt change).
PY      ?= python3
VENV    := .venv
STAMP   := $(VENV)/.installed
RUN     := $(VENV)/bin/python

.PHONY: demo test test-slow bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(RUN) || $(PY) -m venv $(VENV)
	$(RUN) -m pip install -qq --upgrade pip
	$(RUN) -m pip install -qq -c constraints.txt -e '.[dev,bench,text]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/polydiff demo

test: $(STAMP)
	$(RUN) -m pytest -q

test-slow: $(STAMP)
	$(RUN) -m pytest -q -m slow

bench: $(STAMP)
	$(RUN) -m polydiff.benchmarks.samplers
	$(RUN) -m polydiff.benchmarks.trainer_overhead
	$(RUN) -m polydiff.benchmarks.image_training
	$(RUN) -m polydiff.benchmarks.image_sampling
	$(RUN) -m polydiff.benchmarks.image_quality
	$(RUN) -m polydiff.benchmarks.audio_vocoder_speed
	$(RUN) -m polydiff.benchmarks.audio_vocoder_quality
	$(RUN) -m polydiff.benchmarks.video_training
	$(RUN) -m polydiff.benchmarks.video_length
	$(RUN) -m polydiff.benchmarks.video_extension

clean:
	rm -rf $(VENV) *.egg-info build out
