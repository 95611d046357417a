# syntax=docker/dockerfile:1
# ortserve container image: a Debian bookworm build stage, a debian:bookworm-slim runtime stage.
#
#   docker build -t ortserve:0.1.0 .
#   docker run --rm -p 8000:8000 ortserve:0.1.0                     # serves the demo repository
#   docker run --rm -p 8000:8000 -v /srv/models:/models:ro -e ORTSERVE_MODEL_REPOSITORY=/models ortserve:0.1.0
#
# Every RUN line is one call into tools/image_build.sh, which holds the steps themselves, so that they
# can also be run (and proven) in a chroot without a container engine; docs/DEPLOY.md has the rest.
# Needs BuildKit (the default builder since Docker 23) for the bind mount in the runtime stage.

FROM debian:bookworm AS build
WORKDIR /src
# Dependencies first, so that editing sources does not invalidate this layer: Debian packages, ONNX
# Runtime and the real demo model from npm (tools/deps.sh image). Behind a TLS-inspecting proxy, pass
# its CA as a build secret (--secret id=extra-ca,src=ca.pem; tools/container_check.sh does): it is
# trusted for this step only and stays out of every layer.
COPY tools/deps.sh tools/image_build.sh tools/
RUN --mount=type=secret,id=extra-ca tools/image_build.sh build-deps
COPY . .
RUN tools/image_build.sh build /src/build/image
RUN tools/image_build.sh install /rootfs /src/build/image

FROM debian:bookworm-slim AS runtime
COPY --from=build /rootfs/ /
# The shared libraries the binaries need (their Debian packages were listed by the build stage) and
# the unprivileged user; the script is mounted for this step only and stays out of the image.
RUN --mount=type=bind,source=tools/image_build.sh,target=/tmp/image_build.sh /tmp/image_build.sh runtime /
# Every `ortserve serve` option is also an ORTSERVE_* variable: override any of these with -e.
# ORT_DISABLE_TELEMETRY: ONNX Runtime 1.29 otherwise writes a telemetry database under $HOME.
ENV ORTSERVE_MODEL_REPOSITORY=/srv/ortserve/models \
    ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=8000 \
    ORTSERVE_LOG_FORMAT=json \
    ORT_DISABLE_TELEMETRY=1
USER 10001:10001
WORKDIR /srv/ortserve
# gRPC (KServe v2 / Triton) listens on 8001 beside HTTP on 8000 (ORTSERVE_GRPC_PORT; -1 turns it off).
EXPOSE 8000 8001
# bash's /dev/tcp asks GET /v2/health/ready on $ORTSERVE_PORT: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/libexec/ortserve/healthcheck"]
# SIGTERM (docker stop) drains requests in flight for up to --drain-timeout-ms (10 s by default):
# give `docker stop` a longer --time than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ortserve", "serve"]
CMD []
