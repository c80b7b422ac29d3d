// Package remote runs requests on a runtime daemon through the runtime.Executor interface.
package remote

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ociapp/ociapp/daemon/api"
	"github.com/ociapp/ociapp/internal/flight"
	"github.com/ociapp/ociapp/runtime"
)

// Error is an error response of the daemon that no runtime error type
// stands for: unauthorized, body_too_large, bad_request and the like.
// Match it with errors.As and switch on Code.
type Error = api.Error

// UnavailableError means the daemon could not be reached, or the connection
// to it broke before it answered (a request may then have run or not).
type UnavailableError struct {
	URL string
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("ociapp runtime daemon at %s is unreachable: %v", e.URL, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Option configures New.
type Option func(*config) error

type config struct {
	token   string
	tls     *tls.Config
	dialer  func(ctx context.Context, network, addr string) (net.Conn, error)
	log     *slog.Logger
	uploads bool
	noMux   bool
}

// WithHTTPExecute sends each execute as an HTTP request rather than on the
// execute channel (docs/daemon.md): for proxies between client and daemon
// that do not pass connection upgrades.
func WithHTTPExecute() Option {
	return func(c *config) error {
		c.noMux = true
		return nil
	}
}

// WithUploads makes the executor upload artifacts even to a daemon on a
// Unix socket, which it otherwise asks to open the caller's file by path
// (falling back to an upload when the daemon cannot see the file).
func WithUploads() Option {
	return func(c *config) error {
		c.uploads = true
		return nil
	}
}

// WithToken sends token as the bearer token (required by TCP daemons).
func WithToken(token string) Option {
	return func(c *config) error {
		if token == "" {
			return errors.New("token must not be empty")
		}
		c.token = token
		return nil
	}
}

// WithTokenFile reads the bearer token from a file (surrounding whitespace
// is ignored).
func WithTokenFile(path string) Option {
	return func(c *config) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading the token: %w", err)
		}
		if c.token = strings.TrimSpace(string(b)); c.token == "" {
			return fmt.Errorf("token file %s is empty", path)
		}
		return nil
	}
}

// WithCAFile trusts the PEM certificates in path (and only those) for an
// https:// daemon, e.g. one with a self-signed certificate.
func WithCAFile(path string) Option {
	return func(c *config) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", path)
		}
		c.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		return nil
	}
}

// WithTLSConfig sets the TLS configuration for an https:// daemon.
func WithTLSConfig(t *tls.Config) Option {
	return func(c *config) error {
		c.tls = t
		return nil
	}
}

// WithDialer sets how connections to the daemon are made (for a tcp or
// https daemon: network "tcp" and the URL's host:port), e.g. through a
// tunnel or from another network namespace.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(c *config) error {
		c.dialer = dial
		return nil
	}
}

// WithLogger sets the structured logger. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("logger must not be nil")
		}
		c.log = l
		return nil
	}
}

// Executor runs requests on a runtime daemon. It uploads each artifact
// (each version of each file) once, then executes by digest. Its errors are
// those of runtime.Runtime (*runtime.AppError, *runtime.StartupError, ...),
// plus *Error and *UnavailableError. It is safe for concurrent use.
type Executor struct {
	url    string // as given, for messages
	base   string // scheme://host the requests go to
	client *http.Client
	token  string
	log    *slog.Logger
	files  *digests

	// local: the daemon is on this host (a Unix socket), so it is asked to
	// open the caller's files by path rather than be sent them. It is
	// cleared when the daemon does not offer that.
	local      atomic.Bool
	localFiles sync.Map // path as given -> localFile
	localCount atomic.Int64

	// The execute channel (mux.go): how to connect for it, the open one,
	// and whether the daemon has none.
	dialConn  func(ctx context.Context) (net.Conn, error)
	dialAddr  string
	tlsConf   *tls.Config
	muxMu     sync.Mutex
	mux       *muxClient
	muxClosed bool
	muxOff    atomic.Bool

	mu       sync.Mutex
	uploaded map[string]bool // upload digests the daemon is known to hold
	unseen   map[string]bool // file identities the daemon cannot see at their path
	// uploads coalesces concurrent uploads of one digest.
	uploads flight.Group[string, struct{}]
}

var _ runtime.Executor = (*Executor)(nil)

// New returns an executor for the daemon at daemonURL: "unix:///PATH" (its
// socket), "tcp://HOST:PORT" or "http://HOST:PORT" (plain HTTP), or
// "https://HOST:PORT". It connects lazily.
func New(daemonURL string, opts ...Option) (*Executor, error) {
	cfg := config{log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("configuring remote executor: %w", err)
		}
	}
	tr := &http.Transport{
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: 2 * time.Second,
		DisableCompression:    true,
		TLSClientConfig:       cfg.tls,
	}
	dial := cfg.dialer
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	var (
		base     string
		dialConn func(ctx context.Context) (net.Conn, error)
		dialAddr string
		tlsConf  *tls.Config
	)
	if path, ok := strings.CutPrefix(daemonURL, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("daemon URL %q has no socket path", daemonURL)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		dialConn = func(ctx context.Context) (net.Conn, error) { return tr.DialContext(ctx, "unix", path) }
		base = "http://ociapp-runtime"
	} else {
		u, err := url.Parse(daemonURL)
		if err != nil {
			return nil, fmt.Errorf("daemon URL: %w", err)
		}
		switch u.Scheme {
		case "tcp", "http":
			u.Scheme = "http"
		case "https":
		default:
			return nil, fmt.Errorf("daemon URL %q: use unix:///PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT", daemonURL)
		}
		if u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("daemon URL %q: expected scheme://HOST:PORT", daemonURL)
		}
		tr.DialContext = dial
		base = u.Scheme + "://" + u.Host
		dialAddr = u.Host
		if u.Port() == "" {
			dialAddr = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
		}
		dialConn = func(ctx context.Context) (net.Conn, error) { return dial(ctx, "tcp", dialAddr) }
		if u.Scheme == "https" {
			tlsConf = cfg.tls
			if tlsConf == nil {
				tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		}
	}
	ex := &Executor{
		url: daemonURL, base: base, token: cfg.token, log: cfg.log,
		client:   &http.Client{Transport: tr},
		files:    newDigests(),
		uploaded: make(map[string]bool),
		unseen:   make(map[string]bool),
		dialConn: dialConn, dialAddr: dialAddr, tlsConf: tlsConf,
	}
	ex.local.Store(strings.HasPrefix(daemonURL, "unix://") && !cfg.uploads)
	ex.muxOff.Store(cfg.noMux)
	return ex, nil
}

// Close closes the execute channel and idle connections to the daemon.
// Requests in flight on the channel fail.
func (e *Executor) Close() error {
	e.muxMu.Lock()
	e.muxClosed = true
	if e.mux != nil {
		e.mux.close()
		e.mux = nil
	}
	e.muxMu.Unlock()
	e.client.CloseIdleConnections()
	return nil
}

// Execute sends request (a map with string keys, or a struct with msgpack
// tags) to the application in the artifact at artifactPath, on the daemon,
// and returns its response map.
func (e *Executor) Execute(ctx context.Context, artifactPath string, request any) (map[string]any, error) {
	payload, err := runtime.EncodeRequest(request)
	if err != nil {
		return nil, err
	}
	out, err := e.ExecutePayload(ctx, artifactPath, payload)
	if err != nil {
		return nil, err
	}
	return runtime.DecodeResponse(artifactPath, out)
}

// ExecutePayload is Execute on an encoded payload (a msgpack map); it
// returns the encoded response payload.
func (e *Executor) ExecutePayload(ctx context.Context, artifactPath string, payload []byte) ([]byte, error) {
	var out []byte
	err := e.locate(ctx, artifactPath, func(mreq api.MuxRequest) error {
		var err error
		out, err = e.post(ctx, mreq, artifactPath, payload)
		return err
	})
	return out, err
}

// locate calls run with the ways to name the artifact at artifactPath to
// the daemon, as an execute channel's request (whose HTTP route is
// executeRoute): by path for a daemon on this host, else by digest after
// an upload. It tries the next way when run fails because the
// daemon cannot use one, and returns run's last error.
func (e *Executor) locate(ctx context.Context, artifactPath string, run func(mreq api.MuxRequest) error) error {
	if e.local.Load() {
		if err, done := e.runLocal(artifactPath, run); done {
			return err
		}
	}
	d, err := e.files.digest(ctx, artifactPath)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := e.ensureUploaded(ctx, artifactPath, d); err != nil {
			return err
		}
		err := run(api.MuxRequest{Digest: d})
		var apiErr *api.Error
		if attempt == 0 && errors.As(err, &apiErr) && apiErr.Code == api.CodeArtifactNotFound {
			// The daemon lost the artifact (a new state directory): send it
			// again, once.
			e.forget(d)
			continue
		}
		return err
	}
}

// post sends an execute request on the execute channel, as mreq, or when
// the daemon has none as an HTTP request to mreq's route (executeRoute);
// path is the caller's artifact, for errors.
func (e *Executor) post(ctx context.Context, mreq api.MuxRequest, path string, payload []byte) ([]byte, error) {
	if !e.muxOff.Load() {
		mreq.Payload = payload
		out, err := e.executeMux(ctx, path, mreq)
		if !errors.Is(err, errMuxUnsupported) {
			return out, err
		}
	}
	req, err := e.request(ctx, http.MethodPost, executeRoute(mreq), bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", api.MediaMsgpack)
	req.Header.Set("Accept", api.MediaMsgpack)
	if left := api.TimeLeft(ctx); left != 0 {
		// A daemon from before deadlines ignores the header.
		req.Header.Set(api.HeaderDeadline, api.FormatDeadlineHeader(left))
	}
	resp, err := e.do(ctx, req, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, e.transportError(ctx, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, decodeError(resp, body).Err(path)
	}
	return body, nil
}

// executeRoute is the HTTP route of an execute channel's request: the
// local route for one naming the artifact by path, the artifact's own for
// one naming it by digest.
func executeRoute(mreq api.MuxRequest) string {
	if mreq.Digest != "" {
		return api.ExecutePath(mreq.Digest)
	}
	return api.LocalExecuteURL(mreq.Path, mreq.File)
}

// runLocal asks a daemon on this host, through run, to run the artifact
// where it lies: nothing is hashed or sent. It reports done false when the
// daemon cannot (it does not offer it, or finds another file at the path,
// as a daemon in another mount namespace would): the caller uploads
// instead.
func (e *Executor) runLocal(artifactPath string, run func(mreq api.MuxRequest) error) (err error, done bool) {
	abs, id, ok := e.localFileOf(artifactPath)
	if !ok {
		return nil, false // the upload path reports it
	}
	e.mu.Lock()
	unseen := e.unseen[id]
	e.mu.Unlock()
	if unseen {
		return nil, false
	}
	if err = run(api.MuxRequest{Path: abs, File: id}); err == nil {
		return nil, true
	}
	var apiErr *api.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound:
		e.log.Debug("the daemon does not open artifacts by path; uploading them", "daemon", e.url)
		e.local.Store(false)
		return nil, false
	case errors.As(err, &apiErr) && apiErr.Code == api.CodeArtifactNotFound:
		e.log.Debug("the daemon cannot see the artifact at its path; uploading it", "path", abs)
		e.mu.Lock()
		if len(e.unseen) >= maxDigests {
			clear(e.unseen)
		}
		e.unseen[id] = true
		e.mu.Unlock()
		return nil, false
	}
	return err, true
}

// localRecheck is how long a path's absolute form and identity are trusted
// without a stat (as the runtime trusts its own): warm requests cost no
// system call here.
const localRecheck = 100 * time.Millisecond

type localFile struct {
	abs, id string
	at      time.Time
}

// localFileOf returns the absolute path and identity of the regular file
// at path; ok is false when there is none.
func (e *Executor) localFileOf(path string) (abs, id string, ok bool) {
	if v, hit := e.localFiles.Load(path); hit {
		if f := v.(localFile); time.Since(f.at) < localRecheck {
			return f.abs, f.id, true
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", false
	}
	fi, err := os.Stat(abs)
	if err != nil || !fi.Mode().IsRegular() {
		return "", "", false
	}
	id = api.FileIdentity(fi)
	if e.localCount.Add(1) > maxDigests {
		e.localFiles.Clear()
		e.localCount.Store(0)
	}
	e.localFiles.Store(path, localFile{abs: abs, id: id, at: time.Now()})
	return abs, id, true
}

// Upload sends the artifact at path to the daemon unless it holds it
// already, and describes it.
func (e *Executor) Upload(ctx context.Context, path string) (api.Artifact, error) {
	d, err := e.files.digest(ctx, path)
	if err != nil {
		return api.Artifact{}, err
	}
	if err := e.ensureUploaded(ctx, path, d); err != nil {
		return api.Artifact{}, err
	}
	var a api.Artifact
	err = e.getJSON(ctx, api.ArtifactPath(d), &a)
	return a, err
}

func (e *Executor) forget(d string) {
	e.mu.Lock()
	delete(e.uploaded, d)
	e.mu.Unlock()
}

// ensureUploaded makes sure the daemon holds the artifact with upload
// digest d, asking first and sending it only when absent. Concurrent calls
// for one digest share one upload.
func (e *Executor) ensureUploaded(ctx context.Context, path, d string) error {
	if e.isUploaded(d) {
		return nil
	}
	_, err := e.uploads.Do(ctx, d, func() (struct{}, error) {
		// An upload of d may have ended since the check above.
		if e.isUploaded(d) {
			return struct{}{}, nil
		}
		if err := e.upload(ctx, path, d); err != nil {
			return struct{}{}, err
		}
		e.mu.Lock()
		e.uploaded[d] = true
		e.mu.Unlock()
		return struct{}{}, nil
	})
	if err != nil && err == ctx.Err() {
		// This caller gave up waiting for another's upload.
		return fmt.Errorf("uploading %s: %w", path, err)
	}
	return err
}

func (e *Executor) isUploaded(d string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.uploaded[d]
}

func (e *Executor) upload(ctx context.Context, path, d string) error {
	head, err := e.request(ctx, http.MethodHead, api.ArtifactPath(d), nil)
	if err != nil {
		return err
	}
	resp, err := e.do(ctx, head, path)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		e.log.Debug("artifact already on the daemon", "path", path, "digest", d)
		return nil
	case http.StatusNotFound:
	default:
		code := api.Code(resp.Header.Get(api.HeaderErrorCode))
		if code == "" {
			code = api.CodeInternal
		}
		return (&api.Error{Status: resp.StatusCode, Code: code, Message: fmt.Sprintf("checking for %s on the daemon: %s", d, resp.Status)}).Err(path)
	}

	file, err := os.Open(path)
	if err != nil {
		return &runtime.ArtifactError{Path: path, Err: err}
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return &runtime.ArtifactError{Path: path, Err: err}
	}
	put, err := e.request(ctx, http.MethodPut, api.ArtifactPath(d), file)
	if err != nil {
		return err
	}
	put.ContentLength = fi.Size()
	// A retried or 100-continue request rereads the file from the start.
	put.GetBody = func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		return f, err
	}
	put.Header.Set("Content-Type", api.MediaArtifact)
	put.Header.Set("Expect", "100-continue")
	start := time.Now()
	resp, err = e.do(ctx, put, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return e.transportError(ctx, path, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return decodeError(resp, body).Err(path)
	}
	e.log.Info("artifact uploaded", "path", path, "digest", d, "bytes", fi.Size(), "took", time.Since(start))
	return nil
}

// Health checks that the daemon answers and is not shutting down.
func (e *Executor) Health(ctx context.Context) error {
	var h api.Health
	return e.getJSON(ctx, api.HealthPath, &h)
}

// Pools lists the daemon's pools, one per artifact in use.
func (e *Executor) Pools(ctx context.Context) ([]api.Pool, error) {
	var l api.PoolList
	err := e.getJSON(ctx, api.PoolsPath, &l)
	return l.Pools, err
}

// Containers lists the daemon's containers.
func (e *Executor) Containers(ctx context.Context) ([]api.Container, error) {
	var l api.ContainerList
	err := e.getJSON(ctx, api.ContainersPath, &l)
	return l.Containers, err
}

// Artifacts lists the artifacts the daemon holds.
func (e *Executor) Artifacts(ctx context.Context) ([]api.Artifact, error) {
	var l api.ArtifactList
	err := e.getJSON(ctx, api.ArtifactsPath, &l)
	return l.Artifacts, err
}

func (e *Executor) getJSON(ctx context.Context, path string, v any) error {
	req, err := e.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := e.do(ctx, req, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return e.transportError(ctx, "", err)
	}
	if resp.StatusCode != http.StatusOK {
		return decodeError(resp, body).Err("")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding the daemon's answer to %s: %w", path, err)
	}
	return nil
}

func (e *Executor) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, e.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("building a request to the daemon: %w", err)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	return req, nil
}

func (e *Executor) do(ctx context.Context, req *http.Request, artifactPath string) (*http.Response, error) {
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, e.transportError(ctx, artifactPath, err)
	}
	return resp, nil
}

// transportError reports a failed exchange: the caller's context ending,
// as the in-process runtime reports it, or the daemon being unreachable.
func (e *Executor) transportError(ctx context.Context, artifactPath string, err error) error {
	if ctx.Err() != nil {
		if artifactPath != "" {
			return fmt.Errorf("executing %s: %w", artifactPath, ctx.Err())
		}
		return ctx.Err()
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return &UnavailableError{URL: e.url, Err: err}
}

// decodeError reads an error response; one that is not a daemon error body
// (from a proxy, say) is reported with its status and the start of its body.
func decodeError(resp *http.Response, body []byte) *api.Error {
	media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	e, err := api.DecodeError(media, body)
	if err != nil {
		const maxShown = 200
		if len(body) > maxShown {
			body = body[:maxShown]
		}
		code := api.CodeInternal
		if resp.StatusCode == http.StatusUnauthorized {
			code = api.CodeUnauthorized
		}
		return &api.Error{Status: resp.StatusCode, Code: code, Message: fmt.Sprintf("the daemon answered %s: %q", resp.Status, body)}
	}
	e.Status = resp.StatusCode
	return e
}
