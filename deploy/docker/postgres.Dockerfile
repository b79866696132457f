# PostgreSQL 15 from Debian bookworm's package: one cluster in /var/lib/postgresql/data (a
# volume), created on the first start with the database and owner POSTGRES_DB / POSTGRES_USER
# (default loyalty), password POSTGRES_PASSWORD (scram-sha-256 over TCP; trust on the socket).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN set -eu; \
    apt-get update -q; \
    apt-get install -y -q --no-install-recommends postgresql-15 tini; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data; \
    install -d -o postgres -g postgres /var/run/postgresql
COPY deploy/docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=loyalty \
    POSTGRES_DB=loyalty
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=15 \
  CMD ["sh", "-c", "pg_isready -q -h 127.0.0.1 -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""]
LABEL loyalty.image=postgres
ENTRYPOINT ["tini", "--", "postgres-entrypoint"]
