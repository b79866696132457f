# The Python base image made from Debian packages only, for machines that reach no image
# registry: `make base-image` imports a debootstrap'ed bookworm as loyalty-debian:bookworm and
# builds this on it. Debian bookworm's python3 is 3.11, like the public python:3.11-slim-bookworm.
ARG DEBIAN=loyalty-debian:bookworm
FROM ${DEBIAN}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-venv tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && python3 --version
CMD ["python3"]
