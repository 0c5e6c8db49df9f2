# test/clients/sqlalchemy_orm.py: SQLAlchemy 1.4 (Debian 12, psycopg2
# dialect) with version_id_col against a strict pg_idem guard.
#
# The ORM's own flush already guards with WHERE version = <read> and bumps
# the version itself (version = read + 1, which the guard keeps).  What the
# guard adds, and what this test fails on without it: a bulk
# query.update() that assigns a client value without the version (ID011), a
# Core UPDATE that sends a stale version (ID010, mapped to the ORM's
# StaleDataError by the handle_error hook below), and a version bump by an
# atomic increment that makes a concurrent ORM save stale.
import os

from sqlalchemy import Column, Integer, Text, create_engine, event, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, declarative_base
from sqlalchemy.orm.exc import StaleDataError

from tap import ok, done, enforce_sql

Base = declarative_base()


class Post(Base):
    __tablename__ = "sa_post"
    id = Column(Integer, primary_key=True)
    title = Column(Text, nullable=False)
    hits = Column(Integer, nullable=False, default=0)
    version = Column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


# --- docs/orms.md quotes this block ---
def install_idem_error_mapping(engine):
    """Raise the ORM's StaleDataError for pg_idem's version conflict (ID010),
    so one except clause handles both the ORM's own check and the guard's."""
    @event.listens_for(engine, "handle_error")
    def _idem_errors(ctx):
        orig = ctx.original_exception
        if getattr(orig, "pgcode", None) == "ID010":  # psycopg2; psycopg 3: .sqlstate
            raise StaleDataError(orig.diag.message_primary) from orig
# --- end of quoted block ---


engine = create_engine(
    "postgresql+psycopg2://%s@/%s?host=%s&port=%s" % (
        os.environ["PGUSER"], os.environ["PGDATABASE"], os.environ["PGHOST"], os.environ["PGPORT"]),
    connect_args={"application_name": "clients-sqlalchemy"})
install_idem_error_mapping(engine)

with engine.begin() as c:
    c.execute(text("DROP TABLE IF EXISTS sa_post"))
Base.metadata.create_all(engine)
with engine.begin() as c:
    c.execute(text(enforce_sql("sa_post")))

with Session(engine) as s:
    s.add(Post(id=1, title="original", hits=0))
    s.commit()

# A normal versioned update through the unit of work.
with Session(engine) as s:
    p = s.get(Post, 1)
    p.title = "first edit"
    s.commit()
    ok((p.title, p.version) == ("first edit", 2), "a flush with version_id_col updates and bumps the version",
       (p.title, p.version))


def flush_outcome(s):
    """Commit s; return 'ok' or the name of the exception class raised."""
    try:
        s.commit()
        return "ok"
    except StaleDataError:
        s.rollback()
        return "StaleDataError"
    except DBAPIError as e:
        s.rollback()
        return getattr(e.orig, "pgcode", type(e).__name__)


# Two racing saves: two sessions (two connections) both read, both save.
# The ORM's WHERE version = 2 makes the second match no row.
s1, s2 = Session(engine), Session(engine)
p1, p2 = s1.get(Post, 1), s2.get(Post, 1)
p1.title, p2.title = "edit by s1", "edit by s2"
r1, r2 = flush_outcome(s1), flush_outcome(s2)
with Session(engine) as s:
    p = s.get(Post, 1)
    ok((r1, r2, p.title, p.version) == ("ok", "StaleDataError", "edit by s1", 3),
       "two racing ORM saves: one winner, the other StaleDataError", (r1, r2, p.title, p.version))
s1.close(); s2.close()

# A Core UPDATE sending the version read earlier (now stale): ID010 from the
# guard, raised as StaleDataError by the mapping above.
with Session(engine) as s:
    try:
        s.execute(update(Post).where(Post.id == 1).values(title="stale", version=2))
        s.commit()
        res = "ok"
    except StaleDataError:
        res = "StaleDataError"
    ok(res == "StaleDataError", "a stale Core UPDATE raises StaleDataError (ID010 mapped)", res)

# A bulk query.update() without the version assigns a client value blindly:
# two of them racing would both win.  Strict mode refuses it with ID011.
with Session(engine) as s:
    try:
        s.query(Post).filter(Post.id == 1).update({"title": "blind"}, synchronize_session=False)
        s.commit()
        res = "ok"
    except DBAPIError as e:
        res = e.orig.pgcode
    ok(res == "ID011", "a bulk update without the version raises ID011", res)

# An atomic increment is accepted and bumps the version, so an ORM save
# that read the row before it is refused by the ORM's own WHERE version.
s1 = Session(engine)
p1 = s1.get(Post, 1)
with Session(engine) as s:
    s.query(Post).filter(Post.id == 1).update({Post.hits: Post.hits + 1}, synchronize_session=False)
    s.commit()
p1.title = "edit after the increment"
r1 = flush_outcome(s1)
s1.close()
with Session(engine) as s:
    p = s.get(Post, 1)
    ok((p.hits, p.version, r1) == (1, 4, "StaleDataError"),
       "an atomic increment is accepted and bumps the version; a save that read before it is stale",
       (p.hits, p.version, r1))

with engine.begin() as c:
    c.execute(text("DROP TABLE sa_post"))
done()
