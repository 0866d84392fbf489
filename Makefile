# make install: build the release binary and install it with its systemd
# unit and journal catalog. Then: systemctl enable --now execwatch
PREFIX ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
CATALOGDIR ?= /usr/lib/systemd/catalog

.PHONY: build install uninstall

build:
	scripts/install-deps
	cargo build --release --locked

install: build
	install -D -m 0755 target/release/execwatch $(DESTDIR)$(PREFIX)/bin/execwatch
	install -D -m 0644 deploy/systemd/execwatch.service $(DESTDIR)$(UNITDIR)/execwatch.service
	install -D -m 0644 deploy/systemd/execwatch.catalog $(DESTDIR)$(CATALOGDIR)/execwatch.catalog
	-[ -z "$(DESTDIR)" ] && journalctl --update-catalog
	-[ -z "$(DESTDIR)" ] && systemctl daemon-reload 2>/dev/null

uninstall:
	-systemctl disable --now execwatch 2>/dev/null
	rm -f $(DESTDIR)$(PREFIX)/bin/execwatch $(DESTDIR)$(UNITDIR)/execwatch.service $(DESTDIR)$(CATALOGDIR)/execwatch.catalog
