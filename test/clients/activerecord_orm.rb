# test/clients/activerecord_orm.rb: ActiveRecord 6.1 (Debian 12, ruby-pg)
# with lock_version against a strict pg_idem guard.
#
# save / update! guard with WHERE lock_version = <read> and assign read + 1
# (kept by the guard).  update_all(Hash) assigns the client's value and
# lock_version = COALESCE(lock_version, 0) + 1, with no version in WHERE: two
# of them racing both win, a lost update; strict mode refuses it with ID011.
# increment! sends hits = COALESCE(hits, 0) + 1 and the same lock_version
# bump: atomic, accepted.  The guard's errors reach ActiveRecord as
# StatementInvalid; the rescue_from handlers below map them.
require "active_record"
require "active_support/rescuable"

$tests = 0
$failed = 0
def ok(cond, name, diag = nil)
  $tests += 1
  puts "#{cond ? 'ok' : 'not ok'} #{$tests} - #{name}"
  unless cond
    $failed += 1
    diag.inspect.each_line { |l| puts "# #{l}" } unless diag.nil?
  end
  $stdout.flush
end

GUARD = ENV.fetch("IDEM_GUARD", "on") != "off"
CONFIG = { adapter: "postgresql", host: ENV["PGHOST"], port: ENV["PGPORT"], username: ENV["PGUSER"],
           database: ENV["PGDATABASE"], variables: { application_name: "clients-activerecord" } }

# Two connection pools, so the racing saves come from two sessions.
class DbA < ActiveRecord::Base
  self.abstract_class = true
  establish_connection CONFIG
end
class DbB < ActiveRecord::Base
  self.abstract_class = true
  establish_connection CONFIG
end
class PostA < DbA
  self.table_name = "ar_posts"
end
class PostB < DbB
  self.table_name = "ar_posts"
end

# --- docs/orms.md quotes this block ---
# The SQLSTATE of a database error ActiveRecord wrapped, or nil.
def idem_sqlstate(error)
  cause = error.cause
  cause.result&.error_field(PG::PG_DIAG_SQLSTATE) if cause.is_a?(PG::Error)
end

# What a controller includes (ActionController has ActiveSupport::Rescuable's
# rescue_from): one handler for the ORM's own optimistic-lock failure and
# pg_idem's version conflict, another for a write that sent no version.
module IdemVersionErrors
  extend ActiveSupport::Concern
  included do
    rescue_from ActiveRecord::StaleObjectError, with: :version_conflict
    rescue_from ActiveRecord::StatementInvalid do |e|
      case idem_sqlstate(e)
      when "ID010" then version_conflict(e)
      when "ID011" then version_required(e)
      else raise e
      end
    end
  end
end
# --- end of quoted block ---

# Stands in for a controller: records the status it would render.
class Handler
  include ActiveSupport::Rescuable
  include IdemVersionErrors
  attr_reader :status

  def call
    @status = 200
    yield
  rescue StandardError => e
    rescue_with_handler(e) || raise
  end

  def version_conflict(_e) = @status = 409
  def version_required(_e) = @status = 428
end
def status_of(&blk) = Handler.new.tap { |h| h.call(&blk) }.status

c = DbA.connection
c.execute("DROP TABLE IF EXISTS ar_posts")
c.execute("CREATE TABLE ar_posts (id bigserial PRIMARY KEY, title text NOT NULL, hits integer NOT NULL DEFAULT 0, lock_version integer NOT NULL DEFAULT 0)")
c.execute("SELECT idem.enforce_version('ar_posts', 'lock_version', 'strict')") if GUARD
PostA.reset_column_information
PostB.reset_column_information

post = PostA.create!(title: "original")

# A normal versioned update.
post.update!(title: "first edit")
row = PostA.find(post.id)
ok([row.title, row.lock_version] == ["first edit", 1], "update! with lock_version updates and bumps the version",
   [row.title, row.lock_version])

# Two racing saves, two connections: both read, both save.
a = PostA.find(post.id)
b = PostB.find(post.id)
a.title = "edit by a"
b.title = "edit by b"
sa = status_of { a.save! }
sb = status_of { b.save! }
row = PostA.find(post.id)
ok([sa, sb, row.title, row.lock_version] == [200, 409, "edit by a", 2],
   "two racing saves: one winner, the other StaleObjectError (409)", [sa, sb, row.title, row.lock_version])

# update_all with a stale lock_version: ID010, rescued as a conflict.
s = status_of { PostA.where(id: post.id).update_all(title: "stale", lock_version: 1) }
ok(s == 409, "update_all with a stale lock_version raises ID010, rescued as 409", s)

# Two racing update_all(Hash): both read (the title), both write blindly.
# Without the guard both win and the first edit is lost; strict mode
# refuses both with ID011.
a = PostA.find(post.id)
b = PostB.find(post.id)
sa = status_of { PostA.where(id: a.id).update_all(title: "#{a.title} + a") }
sb = status_of { PostB.where(id: b.id).update_all(title: "#{b.title} + b") }
row = PostA.find(post.id)
ok([sa, sb, row.title, row.lock_version] == [428, 428, "edit by a", 2],
   "two racing update_all(Hash) are both refused with ID011 (428)", [sa, sb, row.title, row.lock_version])

# increment! is atomic: two of them racing both count, each bumps the version.
a = PostA.find(post.id)
b = PostB.find(post.id)
sa = status_of { a.increment!(:hits) }
sb = status_of { b.increment!(:hits) }
row = PostA.find(post.id)
ok([sa, sb, row.hits, row.lock_version] == [200, 200, 2, 4],
   "two racing increment! are accepted: hits +2, lock_version +2", [sa, sb, row.hits, row.lock_version])

# A record read before the increments is now stale.
s = status_of { post.update!(title: "edit after the increments") }
ok(s == 409, "a save that read before the increments is stale (409)", s)

c.execute("DROP TABLE ar_posts")
puts "1..#{$tests}"
exit(($failed.zero? && $tests.positive?) ? 0 : 1)
