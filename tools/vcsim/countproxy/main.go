// countproxy — an HTTPS reverse proxy in front of the vSphere simulator that counts the HTTP requests
// passing through it, so that two clients (vmcpi and a govmomi program) are measured on the wire by the
// same counter. Clients talk TLS to it, as they would to a vCenter; it forwards to the simulator over
// plain HTTP on loopback.
//
//	countproxy -backend http://127.0.0.1:PORT -url-file F -cert-file C -control-file K
//
// writes its https://127.0.0.1:PORT base URL to F, its certificate (a fresh self-signed leaf for
// 127.0.0.1, valid for a day: ../selfsigned.go, which build.sh copies beside this file) to C, and the base URL of its control listener (plain HTTP, loopback)
// to K. `GET <control>/take` answers the number of requests since the last take and the SOAP operations
// among them (one line: "N op1,op2,..."; datastore and NFC transfers show as their HTTP method) and
// starts a new count. SIGTERM/SIGINT stop it.
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

var opRe = regexp.MustCompile(`<(?:[A-Za-z0-9_]+:)?Body[^>]*>\s*<(?:[A-Za-z0-9_]+:)?([A-Za-z0-9_]+)`)

type counter struct {
	mu  sync.Mutex
	n   int
	ops []string
}

func (c *counter) add(op string) {
	c.mu.Lock()
	c.n++
	c.ops = append(c.ops, op)
	c.mu.Unlock()
}

func (c *counter) take() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ops := c.n, c.ops
	c.n, c.ops = 0, nil
	return n, ops
}

func main() {
	backend := flag.String("backend", "", "the simulator's base URL (http://127.0.0.1:PORT)")
	urlFile := flag.String("url-file", "", "write the proxy's https base URL here")
	certFile := flag.String("cert-file", "", "write the proxy's certificate (PEM) here")
	controlFile := flag.String("control-file", "", "write the control listener's base URL here")
	flag.Parse()
	target, err := url.Parse(*backend)
	if err != nil || *backend == "" || *urlFile == "" || *certFile == "" || *controlFile == "" {
		log.Fatal("usage: countproxy -backend URL -url-file F -cert-file C -control-file K")
	}
	cfg, pemCert, err := selfSigned("countproxy", 24*time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	var count counter
	proxy := httputil.NewSingleHostReverseProxy(target)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Method
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk") {
			body, err := ioutil.ReadAll(r.Body)
			if err == nil {
				if m := opRe.FindSubmatch(body); m != nil {
					op = string(m[1])
				}
			}
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		count.add(op)
		proxy.ServeHTTP(w, r)
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: cfg}
	go func() { log.Println(srv.Serve(tls.NewListener(l, cfg))) }()
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	control := http.NewServeMux()
	control.HandleFunc("/take", func(w http.ResponseWriter, r *http.Request) {
		n, ops := count.take()
		fmt.Fprintf(w, "%d %s\n", n, strings.Join(ops, ","))
	})
	go func() { log.Println(http.Serve(cl, control)) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	for _, f := range []struct {
		path string
		data []byte
	}{
		{*certFile, pemCert},
		{*controlFile, []byte("http://" + cl.Addr().String() + "\n")},
		{*urlFile, []byte("https://" + l.Addr().String() + "\n")}, // last: the harness waits for it
	} {
		if err := writeAtomic(f.path, f.data); err != nil {
			log.Fatal(err)
		}
	}
	<-sig
	os.Remove(*urlFile)
}
