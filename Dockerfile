# The `kerasline` image that training/deploy/training-job.yaml runs: the wheel of this checkout on the pinned stack.
#   docker build -t kerasline:0.1.0 .        (the tag is pyproject.toml's version; tests/test_packaging.py checks it)
# No Docker engine runs where this project is developed: tests/test_packaging.py parses this file against the
# manifests, and builds and installs the same wheel into a fresh virtual environment.

FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kerasline/ kerasline/
COPY pipelines/ pipelines/
COPY models/ models/
COPY training/ training/
COPY export/ export/
COPY tuning/ tuning/
COPY serving/ serving/
COPY experiments/ experiments/
COPY data/ data/
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /dist .

FROM python:3.11.14-slim-bookworm
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir -c /tmp/constraints.txt /tmp/dist/kerasline-0.1.0-py3-none-any.whl \
    && rm -rf /tmp/dist /tmp/constraints.txt
# runs/ and exports/ go under the working directory; an experiments/ folder here comes before the shipped ones.
WORKDIR /work
ENTRYPOINT ["kerasline"]
CMD ["--help"]
