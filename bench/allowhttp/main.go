// Command allowhttp is the cost floor for Keygate's HTTP authorization
// path (/nginx, /forward): an HTTP/1.1 server that answers every request
// with an empty 200, on keep-alive connections. It is Go's net/http server
// with its defaults, as Keygate's HTTP listener is, so what Keygate costs
// beyond it is Keygate's own work: reading the request's headers into a
// request to decide, deciding, writing the identity headers.
//
// It prints "listening ADDR" on stdout once it accepts connections, so a
// script can start it on port 0 and read the port back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP `address` to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("allowhttp: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	})}
	fmt.Printf("listening %s\n", ln.Addr())
	// Stdout may be a pipe or file the script is waiting on.
	_ = os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("allowhttp: %v", err)
	}
}
