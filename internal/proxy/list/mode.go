package list

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// RunningMode asks the node's proxy which mode it runs: GET /proxyMode on
// its metrics address (KubeProxyConfiguration metricsBindAddress, e.g.
// "127.0.0.1:10249"; an unspecified host means this node's loopback). It
// fails when no proxy answers within a second.
func RunningMode(ctx context.Context, metricsAddr string) (string, error) {
	host, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		return "", fmt.Errorf("list: metrics address %q: %w", metricsAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + "/proxyMode"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("list: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("list: ask the proxy its mode: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil {
		return "", fmt.Errorf("list: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("list: %s: %s", url, resp.Status)
	}
	mode := strings.TrimSpace(string(body))
	if mode == "" {
		return "", fmt.Errorf("list: %s: empty answer", url)
	}
	return mode, nil
}
