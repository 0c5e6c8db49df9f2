// examples/java/PaymentsServer.java: POST /payments with an Idempotency-Key, on pg_idem.
//
// JDBC (PgJDBC, Debian 12: libpostgresql-jdbc-java) and the JDK's
// com.sun.net.httpserver; no other dependency.  The handler logic is the one
// docs/examples.md explains:
//
//   POST /payments       {"amount_cents": 500, "currency": "EUR"}
//                        header Idempotency-Key: <1..255 bytes>
//   GET  /payments/<id>
//
// The key is reserved in a transaction of its own (lease mode), so that a
// concurrent retry of a request still being worked on gets 409 at once
// instead of waiting.  The payment row, its outbox event and the stored
// response are then written in ONE transaction: all three commit or none.
//
//   javac -cp /usr/share/java/postgresql.jar -d out PaymentsServer.java
//   java -cp out:/usr/share/java/postgresql.jar PaymentsServer
//
// Configuration: PGHOST (a socket directory, which JDBC cannot use, means
// 127.0.0.1), PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PORT (default 8080).
// IDEM_EXAMPLES_TEST_DELAY=1 makes the handler honour a request header
// Idem-Test-Delay-Ms (at most 10000): it sleeps that long while holding the
// key, so that a test can send the same key again meanwhile.  Never set it
// in production.
//
// The JDK has no JSON parser: the request body is validated by PostgreSQL
// (an invalid body raises 22P02 there), and responses are jsonb text built
// in SQL.  One connection per request keeps the example free of a pool; a
// real service would use HikariCP.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class PaymentsServer {
    static final String SCOPE = "payments";
    static final String TOPIC = "payment.created";
    static final boolean ALLOW_DELAY = "1".equals(System.getenv("IDEM_EXAMPLES_TEST_DELAY"));
    static final Pattern PAYMENT_PATH = Pattern.compile("^/payments/([0-9]{1,18})$");

    /** A response to send instead of the normal one. */
    static class HttpError extends Exception {
        final int status;
        final Map<String, String> headers;

        HttpError(int status, String error) {
            this(status, error, Map.of());
        }

        HttpError(int status, String error, Map<String, String> headers) {
            super(error);
            this.status = status;
            this.headers = headers;
        }

        String body() {
            return "{\"error\": \"" + getMessage() + "\"}";
        }
    }

    record Response(int status, String body, Map<String, String> headers) {}

    static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    /** An autocommit connection from the libpq environment. */
    static Connection connect() throws SQLException {
        String host = env("PGHOST", "localhost");
        if (host.startsWith("/")) {
            host = "127.0.0.1";
        }
        String url = "jdbc:postgresql://" + host + ":" + env("PGPORT", "5432") + "/"
                + env("PGDATABASE", env("PGUSER", System.getProperty("user.name")));
        Properties props = new Properties();
        props.setProperty("user", env("PGUSER", System.getProperty("user.name")));
        props.setProperty("password", env("PGPASSWORD", ""));
        props.setProperty("ApplicationName", "idem-example-java");
        return DriverManager.getConnection(url, props);
    }

    /** Map a database error to an HTTP error by its SQLSTATE, never its text. */
    static HttpError databaseError(SQLException e) {
        String state = e.getSQLState() == null ? "" : e.getSQLState();
        // 08: connection failure (PgJDBC's own for a refused or broken
        // connection); 53: out of connections; 57: shutting down;
        // 40001/40P01: lost a serialization race or a deadlock.
        if (state.startsWith("08") || state.startsWith("53") || state.startsWith("57")
                || state.equals("40001") || state.equals("40P01")) {
            System.err.println("database: " + state + ": " + e.getMessage());
            return new HttpError(503, "database_unavailable", Map.of("Retry-After", "1"));
        }
        if (state.equals("ID001")) {
            return new HttpError(422, "idempotency_key_mismatch");
        }
        if (state.equals("ID002")) {
            // Our lease ended and a retry took the key over: it does the work.
            return new HttpError(409, "request_in_progress");
        }
        System.err.println("database: " + state + ": " + e.getMessage());
        return new HttpError(500, "internal_error");
    }

    /** The handler logic. */
    static Response createPayment(String key, String raw, long delayMs) throws HttpError, SQLException {
        try (Connection conn = connect()) {
            // 0. Validate the body: a positive integer amount_cents and a
            // three-letter currency.  Not JSON at all raises 22P02.
            long amount;
            String currency;
            try (PreparedStatement st = conn.prepareStatement(
                    "SELECT coalesce(jsonb_typeof(b -> 'amount_cents') = 'number'"
                    + "            AND (b ->> 'amount_cents') ~ '^[1-9][0-9]{0,17}$'"
                    + "            AND jsonb_typeof(b -> 'currency') = 'string'"
                    + "            AND (b ->> 'currency') ~ '^[A-Z]{3}$', false),"
                    + "       b ->> 'amount_cents', b ->> 'currency'"
                    + "  FROM (SELECT CAST(? AS jsonb) AS b) AS r")) {
                st.setString(1, raw);
                try (ResultSet rs = st.executeQuery()) {
                    rs.next(); // a SELECT without FROM-filter: always one row
                    if (!rs.getBoolean(1)) {
                        throw new HttpError(400, "invalid_request");
                    }
                    amount = Long.parseLong(rs.getString(2));
                    currency = rs.getString(3);
                }
            } catch (SQLException e) {
                if ("22P02".equals(e.getSQLState())) {
                    throw new HttpError(400, "invalid_request");
                }
                throw e;
            }

            // 1. Reserve the key, committed on its own (autocommit).  The
            // request body is the fingerprint: another body raises ID001.
            long token;
            try (PreparedStatement st = conn.prepareStatement(
                    "SELECT outcome::text, token, response::text, status,"
                    + "     greatest(ceil(extract(epoch FROM locked_until - clock_timestamp())), 1)::int"
                    + "  FROM idem.reserve(?, CAST(? AS jsonb), ?)")) {
                st.setString(1, key);
                st.setString(2, raw);
                st.setString(3, SCOPE);
                try (ResultSet rs = st.executeQuery()) {
                    rs.next(); // reserve() returns exactly one row
                    switch (rs.getString(1)) {
                        case "replay":
                            return new Response(rs.getInt(4), rs.getString(3),
                                    Map.of("Idempotent-Replayed", "true"));
                        case "in_progress":
                            throw new HttpError(409, "request_in_progress",
                                    Map.of("Retry-After", Integer.toString(rs.getInt(5))));
                        default:
                            token = rs.getLong(2);
                    }
                }
            }

            if (delayMs > 0) { // test only: hold the key a while
                try {
                    Thread.sleep(delayMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }

            // 2. The work, its event and the stored response, in one transaction.
            try {
                conn.setAutoCommit(false);
                String body;
                try (PreparedStatement st = conn.prepareStatement(
                        "INSERT INTO payments (amount_cents, currency, idempotency_key) VALUES (?, ?, ?)"
                        + " RETURNING jsonb_build_object('id', id, 'amount_cents', amount_cents,"
                        + "                              'currency', currency)::text")) {
                    st.setLong(1, amount);
                    st.setString(2, currency);
                    st.setString(3, key);
                    try (ResultSet rs = st.executeQuery()) {
                        rs.next(); // INSERT ... RETURNING of one row
                        body = rs.getString(1);
                    }
                }
                try (PreparedStatement st = conn.prepareStatement(
                        "SELECT idem.emit(?, CAST(? AS jsonb), key => (CAST(? AS jsonb) ->> 'id'))")) {
                    st.setString(1, TOPIC);
                    st.setString(2, body);
                    st.setString(3, body);
                    st.execute();
                }
                try (PreparedStatement st = conn.prepareStatement(
                        "SELECT idem.complete(?, ?, CAST(? AS jsonb), 201, ?)")) {
                    st.setString(1, key);
                    st.setLong(2, token);
                    st.setString(3, body);
                    st.setString(4, SCOPE);
                    st.execute();
                }
                conn.commit();
                return new Response(201, body, Map.of());
            } catch (SQLException e) {
                // Nothing was written.  Give the key back so that a retry can
                // take it over at once; if even that fails, the lease runs
                // out by itself.
                release(conn, key, token);
                throw e;
            }
        }
    }

    static void release(Connection conn, String key, long token) {
        try {
            conn.rollback();
            conn.setAutoCommit(true);
            try (PreparedStatement st = conn.prepareStatement("SELECT idem.release(?, ?, ?)")) {
                st.setString(1, key);
                st.setLong(2, token);
                st.setString(3, SCOPE);
                st.execute();
            }
        } catch (SQLException e) {
            System.err.println("release of key " + key + " failed: " + e.getSQLState() + ": " + e.getMessage());
        }
    }

    /** GET /payments/<id>: the row, or 404 when there is none. */
    static Response getPayment(long id) throws HttpError, SQLException {
        try (Connection conn = connect();
             PreparedStatement st = conn.prepareStatement(
                     "SELECT jsonb_build_object('id', id, 'amount_cents', amount_cents,"
                     + "                          'currency', currency)::text"
                     + "  FROM payments WHERE id = ?")) {
            st.setLong(1, id);
            try (ResultSet rs = st.executeQuery()) {
                // No row: next() is false.  Reading a column without it
                // would raise 24000 (cursor not positioned), not a 404.
                if (!rs.next()) {
                    throw new HttpError(404, "not_found");
                }
                return new Response(200, rs.getString(1), Map.of());
            }
        }
    }

    static void send(HttpExchange ex, int status, String body, Map<String, String> headers) throws IOException {
        byte[] data = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json");
        headers.forEach((k, v) -> ex.getResponseHeaders().set(k, v));
        ex.sendResponseHeaders(status, data.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(data);
        }
    }

    static void handle(HttpExchange ex) throws IOException {
        try {
            Response res;
            String path = ex.getRequestURI().getPath();
            Matcher m = PAYMENT_PATH.matcher(path);
            if (ex.getRequestMethod().equals("GET") && m.matches()) {
                res = getPayment(Long.parseLong(m.group(1)));
            } else if (ex.getRequestMethod().equals("POST") && path.equals("/payments")) {
                String raw = new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
                String key = ex.getRequestHeaders().getFirst("Idempotency-Key");
                int len = key == null ? 0 : key.getBytes(StandardCharsets.UTF_8).length;
                if (len < 1 || len > 255) {
                    throw new HttpError(400, "missing_idempotency_key");
                }
                long delayMs = 0;
                String delay = ex.getRequestHeaders().getFirst("Idem-Test-Delay-Ms");
                if (ALLOW_DELAY && delay != null && delay.matches("[0-9]{1,9}")) {
                    delayMs = Math.min(Long.parseLong(delay), 10000);
                }
                res = createPayment(key, raw, delayMs);
            } else {
                throw new HttpError(404, "not_found");
            }
            send(ex, res.status(), res.body(), res.headers());
        } catch (HttpError e) {
            send(ex, e.status, e.body(), e.headers);
        } catch (SQLException e) {
            HttpError he = databaseError(e);
            send(ex, he.status, he.body(), he.headers);
        } catch (RuntimeException e) {
            e.printStackTrace();
            send(ex, 500, "{\"error\": \"internal_error\"}", Map.of());
        } finally {
            ex.close();
        }
    }

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(env("PORT", "8080"));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
        server.createContext("/", PaymentsServer::handle);
        // The default executor runs one exchange at a time: a request
        // holding a key would keep its retry from ever seeing the 409.
        server.setExecutor(Executors.newFixedThreadPool(16));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(0)));
        server.start();
        System.out.println("listening on 127.0.0.1:" + port);
    }
}
