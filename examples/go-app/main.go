// A small Go HTTP service with its own Prometheus metrics: the second-language example of
// `task app` (README "Deploying your own app").
//
// Routes on PORT (default 8080): GET / (a greeting), GET /api/items (a list, 5-50 ms of work),
// GET /healthz (probes; not counted). Every other path answers 404 and is counted as route
// "unmatched", so stray paths cannot grow the number of series.
// Metrics on METRICS_PORT (default 9090) at /metrics (promhttp, the default registry):
//   http_requests_total{method,route,status}                  counter
//   http_request_duration_seconds{method,route,status}        histogram
//   plus the client's go_*, process_* and promhttp_* metrics.
// Logs: one JSON line per request on stdout (msg "request", method, route, path, status,
// duration_ms), and "listening" once both ports accept connections. SIGTERM/SIGINT stop it
// gracefully (requests in flight finish, at most 10 s).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	requests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests answered, by method, route and status code (probes and scrapes excluded).",
	}, []string{"method", "route", "status"})
	duration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by method, route and status code.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	}, []string{"method", "route", "status"})
)

var logger = slog.New(slog.NewJSONHandler(os.Stdout, nil))

// statusRecorder keeps the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// observed counts, times and logs every request of a route.
func observed(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, req)
		elapsed := time.Since(start)
		status := strconv.Itoa(rec.status)
		requests.WithLabelValues(req.Method, route, status).Inc()
		duration.WithLabelValues(req.Method, route, status).Observe(elapsed.Seconds())
		logger.Info("request", "method", req.Method, "route", route, "path", req.URL.Path, "status", rec.status,
			"duration_ms", float64(elapsed.Microseconds())/1000)
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func appHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /{$}", observed("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"message": "hello from go-app"})
	}))
	mux.HandleFunc("GET /api/items", observed("/api/items", func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(time.Duration(5+rand.IntN(46)) * time.Millisecond)
		writeJSON(w, http.StatusOK, map[string]any{"items": []string{"apple", "banana", "cherry"}})
	}))
	mux.HandleFunc("/", observed("unmatched", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
	}))
	return mux
}

// portFromEnv reads a TCP port (0 picks a free one) or exits with a message naming the variable.
func portFromEnv(name string, def int) int {
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 || n > 65535 {
		logger.Error("bad configuration", "error", fmt.Sprintf("%s=%q is not allowed: expected a TCP port from 0 to 65535", name, raw))
		os.Exit(2)
	}
	return n
}

func listen(port int) net.Listener {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		logger.Error("cannot listen", "port", port, "error", err.Error())
		os.Exit(1)
	}
	return l
}

func main() {
	appListener := listen(portFromEnv("PORT", 8080))
	metricsListener := listen(portFromEnv("METRICS_PORT", 9090))
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.Handler())
	servers := []*http.Server{
		{Handler: appHandler(), ReadHeaderTimeout: 10 * time.Second},
		{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second},
	}
	for i, l := range []net.Listener{appListener, metricsListener} {
		go func() {
			if err := servers[i].Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("server stopped", "error", err.Error())
				os.Exit(1)
			}
		}()
	}
	logger.Info("listening", "port", appListener.Addr().(*net.TCPAddr).Port, "metrics_port", metricsListener.Addr().(*net.TCPAddr).Port)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	sig := <-stop
	logger.Info("shutting down", "signal", sig.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
	logger.Info("stopped")
}
