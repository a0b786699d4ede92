package kvindex

// Helpers of the integration tests: real kvindex-server and kvindex-sim
// processes on 127.0.0.1 (KVINDEX_BIN_DIR, else build/bin of this checkout),
// and a TCP proxy whose connections a test can cut.

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func binPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("KVINDEX_BIN_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "build", "bin")
	}
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("KVINDEX_REQUIRE_BINARIES") != "" {
			t.Fatalf("%s not built: %v", path, err)
		}
		t.Skipf("%s not built (build kvindex first or set KVINDEX_BIN_DIR)", path)
	}
	return path
}

// lines collects a process's output and tells when a line contains a marker.
type lines struct {
	mu   sync.Mutex
	all  []string
	more chan struct{}
}

func (l *lines) add(r io.Reader) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		l.mu.Lock()
		l.all = append(l.all, s.Text())
		close(l.more)
		l.more = make(chan struct{})
		l.mu.Unlock()
	}
}

// waitFor returns the first line containing marker, or "" at the deadline.
func (l *lines) waitFor(marker string, timeout time.Duration) string {
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for _, line := range l.all {
			if strings.Contains(line, marker) {
				l.mu.Unlock()
				return line
			}
		}
		more := l.more
		l.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			return ""
		}
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// start runs a process until the test ends (SIGTERM, then SIGKILL after 10 s).
func start(t *testing.T, argv ...string) *lines {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &lines{more: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", argv[0], err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); out.add(stdout) }()
	go func() { defer readers.Done(); out.add(stderr) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { readers.Wait(); _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return out
}

// startServer starts kvindex-server on 127.0.0.1 (a port it picks) with args;
// returns its gRPC address, read from its stdout line.
func startServer(t *testing.T, args ...string) string {
	t.Helper()
	argv := append([]string{binPath(t, "kvindex-server"), "--listen=127.0.0.1:0", "--metrics_listen=", "--log_level=warn"}, args...)
	out := start(t, argv...)
	line := out.waitFor("kvindex-server: grpc ", 20*time.Second)
	if line == "" {
		t.Fatalf("kvindex-server did not start; output:\n%s", out)
	}
	addr := strings.TrimPrefix(line[strings.Index(line, "kvindex-server: grpc "):], "kvindex-server: grpc ")
	if i := strings.IndexAny(addr, ", "); i >= 0 {
		addr = addr[:i]
	}
	return addr
}

func dial(t *testing.T, addr string, o Options) *Client {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	c, err := Dial(addr, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// proxy forwards TCP connections to target until cut closes them all.
type proxy struct {
	ln       net.Listener
	target   string
	mu       sync.Mutex
	conns    []net.Conn
	cuts     int
	accepted int
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.accepted++
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// cut closes every connection open now, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.cuts++
}

func contextWithDeadline(d time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), d)
}
