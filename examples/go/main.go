// examples/go/main.go: POST /payments with an Idempotency-Key, on pg_idem.
//
// pgx v4 (Debian 12: golang-github-jackc-pgx-v4-dev, a pgxpool) and
// net/http; the handler logic is the one docs/examples.md explains:
//
//	POST /payments       {"amount_cents": 500, "currency": "EUR"}
//	                     header Idempotency-Key: <1..255 bytes>
//	GET  /payments/<id>
//
// The key is reserved in a transaction of its own (lease mode), so that a
// concurrent retry of a request still being worked on gets 409 at once
// instead of waiting.  The payment row, its outbox event and the stored
// response are then written in ONE transaction: all three commit or none.
//
// Build offline against Debian's packaged sources (GOPATH mode):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o payments-server .
//
// Configuration: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGPASSWORD; pgx reads it), PORT (default 8080).  IDEM_EXAMPLES_TEST_DELAY=1
// makes the handler honour a request header Idem-Test-Delay-Ms (at most
// 10000): it sleeps that long while holding the key, so that a test can send
// the same key again meanwhile.  Never set it in production.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

const (
	scope = "payments"
	topic = "payment.created"
)

var (
	allowDelay  = os.Getenv("IDEM_EXAMPLES_TEST_DELAY") == "1"
	currencyRe  = regexp.MustCompile(`^[A-Z]{3}$`)
	paymentPath = regexp.MustCompile(`^/payments/([0-9]{1,18})$`)
	pool        *pgxpool.Pool
)

// httpError is a response to send instead of the normal one.
type httpError struct {
	status  int
	code    string
	headers map[string]string
}

func (e *httpError) Error() string { return e.code }

func fail(status int, code string) *httpError { return &httpError{status: status, code: code} }

func unavailable() *httpError {
	return &httpError{503, "database_unavailable", map[string]string{"Retry-After": "1"}}
}

// databaseError maps an error of a pgx call to an HTTP error by its
// SQLSTATE, never by its text.  An error without a SQLSTATE (no
// *pgconn.PgError inside) is a 503 when the connection failed (refused,
// broken, timed out: a net.Error, an EOF, or what pgconn calls safe to
// retry) and a 500 otherwise (a Scan into the wrong type, say).
// pgx.ErrNoRows is not an error of the database: callers handle it before
// calling this.
func databaseError(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		log.Printf("database: %v", err)
		var netErr net.Error
		if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
			pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
			return unavailable()
		}
		return fail(500, "internal_error")
	}
	switch state := pgErr.Code; {
	case state[:2] == "08" || state[:2] == "53" || state[:2] == "57" ||
		state == "40001" || state == "40P01":
		log.Printf("database: %v", err)
		return unavailable()
	case state == "ID001":
		return fail(422, "idempotency_key_mismatch")
	case state == "ID002":
		// Our lease ended and a retry took the key over: it does the work.
		return fail(409, "request_in_progress")
	default:
		log.Printf("database: %v", err)
		return fail(500, "internal_error")
	}
}

// parsePayment validates the request body.
func parsePayment(raw []byte) (int64, string, error) {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil || body == nil {
		return 0, "", fail(400, "invalid_request")
	}
	var amount int64
	var currency string
	// Unmarshal into int64 refuses strings, fractions and overflow.
	if err := json.Unmarshal(body["amount_cents"], &amount); err != nil || amount <= 0 {
		return 0, "", fail(400, "invalid_request")
	}
	if err := json.Unmarshal(body["currency"], &currency); err != nil || !currencyRe.MatchString(currency) {
		return 0, "", fail(400, "invalid_request")
	}
	return amount, currency, nil
}

type response struct {
	status  int
	body    string
	headers map[string]string
}

// createPayment is the handler logic.
func createPayment(ctx context.Context, key string, raw []byte, delay time.Duration) (*response, error) {
	amount, currency, err := parsePayment(raw)
	if err != nil {
		return nil, err
	}

	// 1. Reserve the key, committed on its own (pool.QueryRow is autocommit).
	// The request body is the fingerprint: another body raises ID001.
	var outcome string
	var token *int64
	var stored *string
	var status *int32
	var retryAfter int32
	err = pool.QueryRow(ctx,
		`SELECT outcome::text, token, response::text, status,
		        greatest(ceil(extract(epoch FROM locked_until - clock_timestamp())), 1)::int
		   FROM idem.reserve($1, $2::jsonb, $3)`,
		key, string(raw), scope).Scan(&outcome, &token, &stored, &status, &retryAfter)
	if err != nil {
		return nil, databaseError(err)
	}
	switch outcome {
	case "replay":
		return &response{int(*status), *stored, map[string]string{"Idempotent-Replayed": "true"}}, nil
	case "in_progress":
		return nil, &httpError{409, "request_in_progress",
			map[string]string{"Retry-After": strconv.Itoa(int(retryAfter))}}
	}

	time.Sleep(delay) // test only: hold the key a while

	// 2. The work, its event and the stored response, in one transaction.
	var body string
	err = pool.BeginFunc(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx,
			`INSERT INTO payments (amount_cents, currency, idempotency_key) VALUES ($1, $2, $3)
			 RETURNING jsonb_build_object('id', id, 'amount_cents', amount_cents,
			                              'currency', currency)::text`,
			amount, currency, key).Scan(&body); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`SELECT idem.emit($1, $2::jsonb, key => ($2::jsonb ->> 'id'))`, topic, body); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT idem.complete($1, $2, $3::jsonb, 201, $4)`,
			key, *token, body, scope)
		return err
	})
	if err != nil {
		// Nothing was written.  Give the key back so that a retry can take
		// it over at once; if even that fails, the lease runs out by itself.
		if _, rerr := pool.Exec(ctx, `SELECT idem.release($1, $2, $3)`, key, *token, scope); rerr != nil {
			log.Printf("release of key %q failed: %v", key, rerr)
		}
		return nil, databaseError(err)
	}
	return &response{201, body, nil}, nil
}

// getPayment answers GET /payments/<id>: the row, or 404 when there is none.
func getPayment(ctx context.Context, id int64) (*response, error) {
	var body string
	err := pool.QueryRow(ctx,
		`SELECT jsonb_build_object('id', id, 'amount_cents', amount_cents, 'currency', currency)::text
		   FROM payments WHERE id = $1`, id).Scan(&body)
	// QueryRow reports "no row" as the error pgx.ErrNoRows, which is not a
	// failure of the database: test it first, or it would become a 503.
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fail(404, "not_found")
	}
	if err != nil {
		return nil, databaseError(err)
	}
	return &response{200, body, nil}, nil
}

func send(w http.ResponseWriter, status int, body string, headers map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	for name, value := range headers {
		w.Header().Set(name, value)
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func handle(w http.ResponseWriter, r *http.Request) {
	var res *response
	var err error
	if m := paymentPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet {
		id, _ := strconv.ParseInt(m[1], 10, 64)
		res, err = getPayment(r.Context(), id)
	} else if r.URL.Path == "/payments" && r.Method == http.MethodPost {
		key := r.Header.Get("Idempotency-Key")
		raw, rerr := io.ReadAll(r.Body)
		var delay time.Duration
		if allowDelay {
			ms, _ := strconv.Atoi(r.Header.Get("Idem-Test-Delay-Ms"))
			if ms > 10000 {
				ms = 10000
			}
			delay = time.Duration(ms) * time.Millisecond
		}
		switch {
		case len(key) < 1 || len(key) > 255:
			err = fail(400, "missing_idempotency_key")
		case rerr != nil:
			err = fail(400, "invalid_request")
		default:
			res, err = createPayment(r.Context(), key, raw, delay)
		}
	} else {
		err = fail(404, "not_found")
	}
	if err != nil {
		he := databaseError(err)
		b, _ := json.Marshal(map[string]string{"error": he.code})
		send(w, he.status, string(b), he.headers)
		return
	}
	send(w, res.status, res.body, res.headers)
}

func main() {
	config, err := pgxpool.ParseConfig("") // the libpq environment
	if err != nil {
		log.Fatal(err)
	}
	config.ConnConfig.RuntimeParams["application_name"] = "idem-example-go"
	// The pool connects lazily, so the service starts even while the
	// database is down and answers 503 until it is back.
	config.LazyConnect = true
	pool, err = pgxpool.ConnectConfig(context.Background(), config)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: http.HandlerFunc(handle)}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Printf("listening on 127.0.0.1:%s\n", port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
