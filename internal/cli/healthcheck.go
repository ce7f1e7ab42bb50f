package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const healthcheckSynopsis = `healthcheck [-timeout 2s] URL

GETs URL (such as http://127.0.0.1:8081/readyz) once and exits 0 when it
answers 200, 1 otherwise (another status, no answer, or no answer within the
timeout), printing why. Container images have no curl or wget: Docker and
docker-compose health checks run this instead.`

// DefaultHealthcheckTimeout bounds one `treasure healthcheck` request.
const DefaultHealthcheckTimeout = 2 * time.Second

// runHealthcheck implements `treasure healthcheck URL`: one GET, no proxy,
// no redirects followed, no connection kept. It returns nil on 200 and an
// error (exit status 1) naming the status and the first line of the body on
// anything else; a missing or malformed URL is a UsageError. It returns when
// ctx ends or the timeout passes, whichever is first.
func runHealthcheck(ctx context.Context, args []string, _ Env, stdio IO) error {
	fs := newFlagSet("healthcheck", healthcheckSynopsis, stdio.Stderr)
	timeout := fs.Duration("timeout", DefaultHealthcheckTimeout, "give up after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &UsageError{Msg: "want exactly one URL, such as http://127.0.0.1:8081/readyz"}
	}
	if *timeout <= 0 {
		return &UsageError{Msg: fmt.Sprintf("-timeout %v: want a positive duration", *timeout)}
	}
	target := fs.Arg(0)
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &UsageError{Msg: fmt.Sprintf("%q: want an http:// or https:// URL with a host", target)}
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("healthcheck request: %w", err)
	}
	client := &http.Client{
		// A health check talks to its own container: never through a proxy,
		// and a fresh connection each time.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		// A redirect is not a 200 from the endpoint asked for.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	// /readyz says why it is not ready on its first line.
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 512)).ReadString('\n')
	if line = strings.TrimSpace(line); line != "" {
		return fmt.Errorf("get %s: %s: %s", u.Redacted(), resp.Status, line)
	}
	return fmt.Errorf("get %s: %s", u.Redacted(), resp.Status)
}
