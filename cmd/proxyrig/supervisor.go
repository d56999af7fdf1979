package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
	"proxyrig/topologies"
)

// The supervisor is the long-lived half of `lab up`: it builds the lab,
// holds its echo and health-check servers, answers the control socket
// (`lab apply|status|down`) and resyncs the datapath every sync period so
// that state wiped out of band heals, as kube-proxy's does.

type statusResponse struct {
	Name     string                         `json:"name"`
	State    string                         `json:"state"` // up, stale
	PID      int                            `json:"pid"`
	Started  time.Time                      `json:"started"`
	LastSync time.Time                      `json:"lastSync"`
	Syncs    int                            `json:"syncs"`
	Error    string                         `json:"error,omitempty"` // last sync error
	Stats    map[string]datapaths.SyncStats `json:"lastSyncStats,omitempty"`
	Info     *topologies.Info               `json:"info,omitempty"`
}

type applyResponse struct {
	Info  topologies.Info                `json:"info"`
	Stats map[string]datapaths.SyncStats `json:"syncStats"`
}

type supervisor struct {
	mu       sync.Mutex
	lab      *topologies.Lab
	name     string
	started  time.Time
	lastSync time.Time
	syncs    int
	lastErr  error
	log      *slog.Logger
	shutdown chan struct{}
	once     sync.Once
}

func labSupervise(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lab supervise", flag.ContinueOnError)
	var f labFlags
	f.register(fs)
	sourcesPath := fs.String("sources", "", "JSON file with the cluster sources")
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2}
	}
	// fd 3 is the readiness pipe from `lab up`: one JSON message, then close.
	ready := os.NewFile(3, "ready")
	tell := func(v any) {
		if ready != nil {
			_ = json.NewEncoder(ready).Encode(v)
			ready.Close()
			ready = nil
		}
	}
	fail := func(err error) error {
		tell(map[string]string{"error": err.Error()})
		return err
	}
	opts, err := f.options()
	if err != nil {
		return fail(err)
	}
	var srcs []model.Source
	b, err := os.ReadFile(*sourcesPath)
	if err == nil {
		err = json.Unmarshal(b, &srcs)
	}
	if err != nil {
		return fail(fmt.Errorf("read sources: %w", err))
	}
	cluster, err := model.ParseSources(srcs...)
	if err != nil {
		return fail(err)
	}
	dir := stateDir(f.name)
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		return fail(err)
	}

	lab, err := topologies.Build(ctx, cluster, opts)
	if err != nil {
		return fail(fmt.Errorf("build lab %s: %w", f.name, err))
	}
	s := &supervisor{lab: lab, name: f.name, started: time.Now(), lastSync: time.Now(), syncs: 1,
		log: opts.Logger, shutdown: make(chan struct{})}
	defer s.close()

	sock := filepath.Join(dir, "control.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fail(fmt.Errorf("control socket: %w", err))
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	info := lab.Info()
	tell(map[string]any{"info": info})

	var tick <-chan time.Time
	if f.syncPeriod > 0 {
		t := time.NewTicker(f.syncPeriod)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.shutdown:
			return nil
		case <-tick:
			s.resync(ctx)
		}
	}
}

func (s *supervisor) resync(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.lab.Resync(ctx, true)
	s.syncs++
	s.lastSync = time.Now()
	s.lastErr = err
	if err != nil {
		s.log.Error("periodic resync failed", "lab", s.name, "err", err)
	}
}

// close tears the lab down and removes the state directory. It runs on
// every exit path of the supervisor.
func (s *supervisor) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.lab.Close(ctx); err != nil {
		s.log.Error("closing lab", "lab", s.name, "err", err)
	}
	_ = os.RemoveAll(stateDir(s.name))
}

func (s *supervisor) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		info := s.lab.Info()
		st := statusResponse{Name: s.name, State: "up", PID: os.Getpid(), Started: s.started,
			LastSync: s.lastSync, Syncs: s.syncs, Stats: s.lab.LastSync(), Info: &info}
		if s.lastErr != nil {
			st.Error = s.lastErr.Error()
		}
		s.mu.Unlock()
		writeReply(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /apply", func(w http.ResponseWriter, r *http.Request) {
		var srcs []model.Source
		if err := json.NewDecoder(r.Body).Decode(&srcs); err != nil {
			writeReply(w, http.StatusBadRequest, map[string]string{"error": "decode sources: " + err.Error()})
			return
		}
		cluster, err := model.ParseSources(srcs...)
		if err != nil {
			writeReply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		err = s.lab.Apply(r.Context(), cluster)
		s.syncs++
		s.lastSync = time.Now()
		s.lastErr = err
		if err != nil {
			writeReply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeReply(w, http.StatusOK, applyResponse{Info: s.lab.Info(), Stats: s.lab.LastSync()})
	})
	mux.HandleFunc("POST /resync", func(w http.ResponseWriter, r *http.Request) {
		s.resync(r.Context())
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.lastErr != nil {
			writeReply(w, http.StatusInternalServerError, map[string]string{"error": s.lastErr.Error()})
			return
		}
		writeReply(w, http.StatusOK, s.lab.LastSync())
	})
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		writeReply(w, http.StatusOK, map[string]string{"state": "shutting down"})
		s.once.Do(func() { close(s.shutdown) })
	})
	return mux
}

func writeReply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// controlCall sends one request to a lab's supervisor over its unix socket.
// A non-2xx reply becomes an error carrying the supervisor's message.
func controlCall(ctx context.Context, lab, method, path string, body, out any) error {
	if err := topologies.ValidateName(lab); err != nil {
		return err
	}
	sock := filepath.Join(stateDir(lab), "control.sock")
	if _, err := os.Stat(sock); err != nil {
		return fmt.Errorf("lab %q is not up (no %s)", lab, sock)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://lab"+path, rd)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("lab %s supervisor: %w", lab, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("lab %s supervisor: %s", lab, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
