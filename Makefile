# Switchboard: two commands take a fresh Debian 12 machine with the Swift toolchain to a working product.
#   make run     install what is missing, build, check the rules, start the server on 127.0.0.1:8080
#   make test    install what is missing, build, run the Swift tests (beside a throwaway PostgreSQL), then
#                check and test the rules in rules/, the console in headless Chromium, the Lua bridge under
#                ASan, and a short fuzz run
#   make release the server for production: .build/release/switchboard with Swift's libraries linked in
#   make bench   release build; the engine beside lua5.4 + lua-cjson, the server beside nginx-lua
#   make fuzz    the libFuzzer targets, FUZZ_SECONDS each (default 300)
SWIFT ?= swift
BIN := .build/debug/switchboard
# Debian's mimalloc preloaded: the allocator release builds link (scripts/build_release.sh), so the server and
# the tests run here on the one people deploy.
ON_MIMALLOC := scripts/on_mimalloc.sh
FUZZ_SECONDS ?= 300
# How long `make test` runs each fuzz target (a smoke run; `make fuzz` is the real one).
TEST_FUZZ_SECONDS ?= 15

.PHONY: deps build release run test asan fuzz bench clean browser screenshots

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

# Needs only Debian's libraries at run time (libsqlite3, liblua5.4, libmimalloc2.0, libstdc++, zlib); linked
# with mimalloc unless ALLOCATOR=glibc, built without Swift's run-time exclusivity checks unless
# EXCLUSIVITY=checked: see scripts/build_release.sh.
release: deps
	scripts/build_release.sh switchboard
	@echo "built .build/release/switchboard (where it runs it needs Debian's libsqlite3-0, liblua5.4-0, libmimalloc2.0)"

run: build
	$(ON_MIMALLOC) $(BIN) check --rules rules
	@echo
	@echo "Send it a sample from another terminal (Ctrl-C here stops the server):"
	@echo "  curl -s -H 'Content-Type: application/json' --data-binary @samples/channel_create__inbound.json http://127.0.0.1:8080/hooks/channel_create"
	@echo
	$(ON_MIMALLOC) $(BIN) serve --rules rules --host 127.0.0.1 --port 8080

# The Swift tests (the test process and every server it starts) and the commands after them run on mimalloc;
# the browser checks (Chromium has its own allocator) and the ASan run (it must replace malloc) do not.
test: build
	$(SWIFT) build --build-tests
	scripts/with_postgres.sh $(ON_MIMALLOC) $(SWIFT) test --skip-build
	$(ON_MIMALLOC) $(BIN) decode samples/* >/dev/null
	@echo "switchboard decode: every file in samples/ decoded"
	$(ON_MIMALLOC) $(BIN) check --rules rules
	$(ON_MIMALLOC) $(BIN) test --rules rules
	@scripts/deps.sh browser
	/usr/bin/python3 Tests/Browser/console_test.py --binary $(BIN)
	scripts/asan.sh
	scripts/fuzz.sh $(TEST_FUZZ_SECONDS)

# The web console in headless Chromium against the real server (part of `make test`).
browser: build
	@scripts/deps.sh browser
	/usr/bin/python3 Tests/Browser/console_test.py --binary $(BIN)

# The same checks, saving each console page (light and dark) as docs/console/*.png for the README.
screenshots: build
	@scripts/deps.sh browser
	/usr/bin/python3 Tests/Browser/console_test.py --binary $(BIN) --screenshots docs/console

# The Lua bridge's and the JSON reader's tests under AddressSanitizer (part of `make test`).
asan: deps
	scripts/asan.sh

fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

bench:
	@scripts/deps.sh bench
	@scripts/deps.sh browser
	scripts/bench.sh
	scripts/count_instructions.sh
	scripts/serve_bench.sh
	scripts/console_bench.sh
	scripts/speed_table.sh
	scripts/cluster_bench.sh

clean:
	rm -rf .build .build-asan .build-fuzz
