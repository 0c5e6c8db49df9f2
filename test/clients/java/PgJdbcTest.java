// test/clients/java/PgJdbcTest.java: PgJDBC (Debian 12's 42.5) against a
// strict pg_idem guard, with hand-written optimistic UPDATEs, and Spring's
// SQLErrorCodeSQLExceptionTranslator configured by sql-error-codes.xml (next
// to this file, on the classpath) to turn ID010 into
// OptimisticLockingFailureException.  Run as a single source file:
//   java -cp <postgresql.jar, spring jars, this directory> PgJdbcTest.java
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.concurrent.CompletableFuture;

import org.springframework.dao.DataAccessException;
import org.springframework.dao.InvalidDataAccessApiUsageException;
import org.springframework.dao.OptimisticLockingFailureException;
import org.springframework.jdbc.support.SQLErrorCodeSQLExceptionTranslator;

public class PgJdbcTest {
    static int tests = 0, failed = 0;
    static final boolean GUARD = !"off".equals(System.getenv("IDEM_GUARD"));

    static void ok(boolean cond, String name, Object diag) {
        tests++;
        System.out.println((cond ? "ok " : "not ok ") + tests + " - " + name);
        if (!cond) {
            failed++;
            System.out.println("# " + diag);
        }
    }

    static Connection connect() throws SQLException {
        // The throwaway cluster trusts local TCP connections.
        String url = "jdbc:postgresql://127.0.0.1:" + System.getenv("PGPORT") + "/" + System.getenv("PGDATABASE")
                + "?user=" + System.getenv("PGUSER") + "&ApplicationName=clients-pgjdbc";
        return DriverManager.getConnection(url);
    }

    static int[] row(Connection c) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT hits, version FROM jd_post WHERE id = 1")) {
            rs.next();
            return new int[] {rs.getInt(1), rs.getInt(2)};
        }
    }

    static String title(Connection c) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT title FROM jd_post WHERE id = 1")) {
            rs.next();
            return rs.getString(1);
        }
    }

    // --- docs/orms.md quotes this block ---
    // A hand-written optimistic update: send the version read; pg_idem checks
    // it and writes version + 1.  A stale version fails with SQLSTATE ID010.
    static int saveTitle(Connection c, int id, String title, int versionRead) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "UPDATE jd_post SET title = ?, version = ? WHERE id = ? RETURNING version")) {
            ps.setString(1, title);
            ps.setInt(2, versionRead);
            ps.setInt(3, id);
            try (ResultSet rs = ps.executeQuery()) {
                return rs.next() ? rs.getInt(1) : -1;   // -1: no such row
            }
        }
    }
    // --- end of quoted block ---

    // The SQLSTATE a statement failed with, or null.
    interface Work { void run() throws SQLException; }
    static String sqlState(Work w) {
        try {
            w.run();
            return null;
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    // Poll until backend pid waits for a lock: a step of the interleaving,
    // not a timing assertion.  c may be inside a transaction, which sees one
    // snapshot of pg_stat_activity until it ends: clear it before each look.
    static void waitBlocked(Connection c, int pid) throws Exception {
        for (;;) {
            try (Statement s = c.createStatement()) {
                s.execute("SELECT pg_stat_clear_snapshot()");
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = ?")) {
                ps.setInt(1, pid);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next() && rs.getBoolean(1)) return;
                }
            }
            Thread.sleep(10);
        }
    }

    static int pid(Connection c) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT pg_backend_pid()")) {
            rs.next();
            return rs.getInt(1);
        }
    }

    public static void main(String[] args) throws Exception {
        Connection a = connect(), b = connect();
        try (Statement s = a.createStatement()) {
            s.execute("DROP TABLE IF EXISTS jd_post");
            s.execute("CREATE TABLE jd_post (id int PRIMARY KEY, title text NOT NULL, hits int NOT NULL DEFAULT 0, version int NOT NULL)");
            if (GUARD) s.execute("SELECT idem.enforce_version('jd_post', 'version', 'strict')");
            s.execute("INSERT INTO jd_post (id, title, version) VALUES (1, 'original', 1)");
        }
        SQLErrorCodeSQLExceptionTranslator translator = new SQLErrorCodeSQLExceptionTranslator("PostgreSQL");

        // A normal versioned update.
        int v = row(a)[1];
        int next = saveTitle(a, 1, "first edit", v);
        ok(next == v + 1 && "first edit".equals(title(a)), "an update with the version read succeeds and bumps the version",
                next);

        // The same version again is stale: ID010, which Spring translates to
        // OptimisticLockingFailureException.
        DataAccessException dae = null;
        try {
            saveTitle(a, 1, "stale edit", v);
        } catch (SQLException e) {
            dae = translator.translate("saveTitle", null, e);
        }
        ok(dae instanceof OptimisticLockingFailureException, "a stale version: ID010, translated to OptimisticLockingFailureException",
                dae == null ? "no error" : dae.getClass().getName());

        // Two racing saves: both read; the first writes inside an open
        // transaction, the second waits for its row lock, then gets ID010.
        int va = row(a)[1], vb = row(b)[1];
        int pidB = pid(b);   // before b is busy: a connection runs one statement at a time
        a.setAutoCommit(false);
        saveTitle(a, 1, "edit by a", va);
        CompletableFuture<String> second = CompletableFuture.supplyAsync(() -> sqlState(() -> saveTitle(b, 1, "edit by b", vb)));
        waitBlocked(a, pidB);
        a.commit();
        a.setAutoCommit(true);
        String st = second.get();
        ok("ID010".equals(st) && "edit by a".equals(title(a)) && row(a)[1] == va + 1,
                "two racing saves: the first wins, the second waits and gets ID010", st + " " + title(a));

        // The textbook hand-written form, version = version + 1 guarded by
        // WHERE version = ?, is refused in strict mode: the assigned version
        // is an expression of the row, which proves nothing by itself.
        int v2 = row(a)[1];
        st = sqlState(() -> {
            try (PreparedStatement ps = a.prepareStatement(
                    "UPDATE jd_post SET title = ?, version = version + 1 WHERE id = ? AND version = ?")) {
                ps.setString(1, "textbook edit");
                ps.setInt(2, 1);
                ps.setInt(3, v2);
                ps.executeUpdate();
            }
        });
        ok("ID011".equals(st), "SET version = version + 1 ... WHERE version = ? raises ID011 in strict mode", st);

        // A blind write: ID011, translated to InvalidDataAccessApiUsageException.
        dae = null;
        try (PreparedStatement ps = a.prepareStatement("UPDATE jd_post SET title = ? WHERE id = ?")) {
            ps.setString(1, "blind");
            ps.setInt(2, 1);
            ps.executeUpdate();
        } catch (SQLException e) {
            dae = translator.translate("blind", null, e);
        }
        ok(dae instanceof InvalidDataAccessApiUsageException, "an update without a version: ID011, translated to InvalidDataAccessApiUsageException",
                dae == null ? "no error" : dae.getClass().getName());

        // An atomic increment needs no version, and bumps it.
        int[] before = row(a);
        st = sqlState(() -> {
            try (PreparedStatement ps = b.prepareStatement("UPDATE jd_post SET hits = hits + ? WHERE id = ?")) {
                ps.setInt(1, 1);
                ps.setInt(2, 1);
                ps.executeUpdate();
            }
        });
        int[] after = row(a);
        ok(st == null && after[0] == before[0] + 1 && after[1] == before[1] + 1,
                "an atomic increment is accepted and bumps the version", st + " " + after[0] + " " + after[1]);

        try (Statement s = a.createStatement()) {
            s.execute("DROP TABLE jd_post");
        }
        a.close();
        b.close();
        System.out.println("1.." + tests);
        System.exit(failed == 0 && tests > 0 ? 0 : 1);
    }
}
