# Switchboard: two commands take a fresh Debian 12 machine with the Swift toolchain to a working product.
#   make run     install what is missing, build, check the rules and run them on samples (dry run)
#   make test    install what is missing, build, run the Swift tests, then check and test the rules in rules/
#   make bench   release build; events/s beside the lua5.4 + lua-cjson anchor
SWIFT ?= swift
BIN := .build/debug/switchboard

.PHONY: deps build run test bench clean

deps:
	@scripts/deps.sh

build: deps
	$(SWIFT) build

run: build
	$(BIN) check --rules rules
	$(BIN) run --rules rules samples/channel_create__inbound.json samples/notifications__low_balance.json \
		samples/notifications__missed_call.json samples/notifications__voicemail_new.json samples/channel_destroy__inbound.form

test: build
	$(SWIFT) test
	$(BIN) decode samples/* >/dev/null
	@echo "switchboard decode: every file in samples/ decoded"
	$(BIN) check --rules rules
	$(BIN) test --rules rules

bench:
	@scripts/deps.sh bench
	scripts/bench.sh

clean:
	rm -rf .build
