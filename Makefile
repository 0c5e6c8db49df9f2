# Makefile for pg_idem (PGXS)
#
#   make && make install     build and install into the PostgreSQL that pg_config names
#   make installcheck        pg_regress + isolation + pgTAP against your own running server
#                            (docs/installcheck.md); PERL_TAP=1 adds the perl TAP tests
#   make test                install what is missing, start a throwaway cluster, run every suite
#   make demo                the same cluster, narrated: every capability working
#   make bench               pgbench workloads side by side with the SQL they replace

EXTENSION  = pg_idem
EXTVERSION = 0.2.0

MODULE_big = pg_idem
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# The install script of the current version is assembled from one fragment
# per capability (src/sql/NN_name.sql, in file-name order), the way PgQ keeps
# one object per file.  Released versions' install scripts are frozen copies
# (src/pg_idem--0.1.0.sql), kept so that upgrades can be tested from them;
# upgrade scripts (src/pg_idem--A--B.sql) are written by hand.
DATA_built = src/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(filter-out $(DATA_built),$(wildcard src/$(EXTENSION)--*.sql))

# Test suites are discovered by file name, so adding a test never means
# editing this file.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=$(EXTENSION)
ISOLATION      = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --load-extension=$(EXTENSION) --inputdir=test
# TAP_TESTS makes PGXS's installcheck call $(prove_installcheck), which is
# redefined below: pgTAP, then the perl TAP tests when asked for.
TAP_TESTS   = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))
PGTAP_TESTS = $(sort $(wildcard test/pgtap/*.sql))
PGTAP_DB    = pg_idem_pgtap

EXTRA_CLEAN = $(DATA_built) results output_iso tmp_check log regression.diffs regression.out

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers -Wno-cast-function-type

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.PHONY: test demo bench

ifneq ($(wildcard $(PGXS)),)
include $(PGXS)

$(DATA_built): $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

# make installcheck, after pg_regress and pg_isolation_regress: the pgTAP
# suites, with pg_prove, in a scratch database (skipped, with a message, when
# pgTAP or pg_prove is not installed); then, with PERL_TAP=1, the perl TAP
# tests.  Those start throwaway clusters of their own from the installed
# binaries (they never touch the server installcheck runs against), must run
# as a user initdb accepts (not root), and need IPC::Run and DBD::Pg, so they
# are not run unless asked for.  PGXS's own recipe cannot be used for them:
# Makefile.global assigns PROVE_FLAGS after this file has set it, so the
# tests could not find test/t/IdemTest.pm.  PROVE_FLAGS stays what it is in
# PGXS, for the user's own flags (PROVE_FLAGS=-v).
define prove_installcheck
PGTAP_DB='$(PGTAP_DB)' bash $(srcdir)/test/scripts/installcheck-pgtap.sh $(PGTAP_TESTS)
$(if $(filter-out 0 no,$(PERL_TAP)),$(idem_perl_installcheck),@echo "perl TAP tests (test/t) not run: make installcheck PERL_TAP=1 runs them (docs/installcheck.md)")
endef

define idem_perl_installcheck
rm -rf '$(CURDIR)'/tmp_check && $(MKDIR_P) '$(CURDIR)'/tmp_check && \
cd $(srcdir) && TESTDIR='$(CURDIR)' PATH="$(bindir):$$PATH" IDEM_ROOT='$(CURDIR)' \
   PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
   $(PROVE) $(PG_PROVE_FLAGS) -I test/t $(PROVE_FLAGS) $(PROVE_TESTS)
endef

# PGXS tracks no header dependencies: rebuild every object when a header
# changes, so a stale object can never be installed.
$(OBJS): $(wildcard src/*.h)
else
all install installcheck:
	@echo "PostgreSQL server headers not found (pg_config --pgxs: '$(PGXS)')." >&2
	@echo "Install postgresql-server-dev-15, or run 'make test' / 'make demo', which install it." >&2
	@exit 1
endif

# The two README commands.  They need no PGXS of their own: the scripts
# install what is missing, then call back into this Makefile.
test:
	@bash test/scripts/run-tests.sh

demo:
	@bash test/scripts/demo.sh

bench:
	@bash bench/run.sh
