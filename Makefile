# make install: build the release binary and install it with its systemd
# unit, journal catalog, modules-load.d entry (overlay), man pages and
# completions. Then:
#   systemctl enable --now execwatch
# make package: the Debian package instead (scripts/package), which does the
# enabling, starting and the clean removal itself.
PREFIX ?= /usr/local
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
CATALOGDIR ?= /usr/lib/systemd/catalog
MODULESLOADDIR ?= /usr/lib/modules-load.d
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
FILES = target/package-files
# rustup installs cargo there; sudo and cron often leave it off PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: build install uninstall package

build:
	scripts/install-deps
	cargo build --release --locked
	rm -rf $(FILES)
	target/release/execwatch gen-package-files $(FILES)

install: build
	install -D -m 0755 target/release/execwatch $(DESTDIR)$(PREFIX)/bin/execwatch
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/execwatch |ExecStart=$(PREFIX)/bin/execwatch |' \
		deploy/systemd/execwatch.service > $(DESTDIR)$(UNITDIR)/execwatch.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/execwatch.service
	install -D -m 0644 deploy/systemd/execwatch.catalog $(DESTDIR)$(CATALOGDIR)/execwatch.catalog
	install -D -m 0644 deploy/systemd/execwatch-modules.conf $(DESTDIR)$(MODULESLOADDIR)/execwatch.conf
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 $(FILES)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -D -m 0644 $(FILES)/completions/execwatch.bash $(DESTDIR)$(BASHCOMPDIR)/execwatch
	install -D -m 0644 $(FILES)/completions/_execwatch $(DESTDIR)$(ZSHCOMPDIR)/_execwatch
	install -D -m 0644 $(FILES)/completions/execwatch.fish $(DESTDIR)$(FISHCOMPDIR)/execwatch.fish
	@if [ -z "$(DESTDIR)" ]; then journalctl --update-catalog; systemctl daemon-reload 2>/dev/null || true; fi

uninstall:
	@if [ -z "$(DESTDIR)" ]; then systemctl disable --now execwatch 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/execwatch $(DESTDIR)$(UNITDIR)/execwatch.service \
		$(DESTDIR)$(CATALOGDIR)/execwatch.catalog $(DESTDIR)$(MODULESLOADDIR)/execwatch.conf \
		$(DESTDIR)$(MANDIR)/man1/execwatch.1 $(DESTDIR)$(MANDIR)/man1/execwatch-*.1 \
		$(DESTDIR)$(BASHCOMPDIR)/execwatch $(DESTDIR)$(ZSHCOMPDIR)/_execwatch \
		$(DESTDIR)$(FISHCOMPDIR)/execwatch.fish
	@if [ -z "$(DESTDIR)" ]; then journalctl --update-catalog; fi

package:
	scripts/package
