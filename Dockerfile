# kvindex-server image (the one charts/kvindex deploys). Multi-stage, Debian 12:
#   docker build -t kvindex/kvindex-server:0.1.0 .

# ---- build: the same Debian packages as scripts/test, then the two binaries
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/lib/setup.sh scripts/lib/setup.sh
RUN bash -c 'source scripts/lib/setup.sh && kvindex_install_missing' && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVINDEX_WERROR=OFF \
 && cmake --build build --target kvindex-server kvindex -j "$(nproc)" \
 && strip build/bin/kvindex-server build/bin/kvindex
# The runtime stage installs the packages owning the shared libraries the binaries load
# (today: libgrpc++1.51 libgrpc29 libprotobuf32 libzmq5 libspdlog1.10 libfmt9 libxxhash0
# libabsl20220623 libssl3 libre2-9 libc-ares2 zlib1g libcpp-httplib0.11 and their own dependencies).
RUN ldd build/bin/kvindex-server build/bin/kvindex \
      | awk '$3 ~ /^\// {print $3}' | sort -u | xargs -n1 readlink -f \
      | while read -r f; do dpkg -S "$f" 2>/dev/null || dpkg -S "${f#/usr}"; done \
      | cut -d: -f1 | sort -u > /runtime-packages.txt \
 && cat /runtime-packages.txt

# ---- runtime: slim Debian, runtime libraries only, non-root
FROM debian:bookworm-slim
COPY --from=build /runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --gid 65532 kvindex \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kvindex
COPY --from=build /src/build/bin/kvindex-server /src/build/bin/kvindex /usr/local/bin/
# Fail the image build, not the pod, when a library is missing.
RUN ! ldd /usr/local/bin/kvindex-server /usr/local/bin/kvindex | grep "not found"
USER 65532:65532
# gRPC (kvindex.v1.KvIndex, health, reflection) and Prometheus /metrics.
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/kvindex-server"]
