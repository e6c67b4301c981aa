// A Go HTTPS client for the key log tests and bench (crypto/tls, no KeyLogWriter set):
//
//	goclient URL tls12|tls13 COUNT
//
// says "ready", then for each line on stdin makes COUNT requests, each on a new TLS
// connection, and says "done BODY" with the last response's body.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	url, version := os.Args[1], uint16(tls.VersionTLS13)
	if os.Args[2] == "tls12" {
		version = tls.VersionTLS12
	}
	count, _ := strconv.Atoi(os.Args[3])
	config := &tls.Config{InsecureSkipVerify: true, MinVersion: version, MaxVersion: version}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var body []byte
		for i := 0; i < count; i++ {
			tr := &http.Transport{TLSClientConfig: config, DisableKeepAlives: true}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			r, err := client.Get(url)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			body, _ = io.ReadAll(r.Body)
			r.Body.Close()
			tr.CloseIdleConnections()
		}
		fmt.Println("done", strings.TrimSpace(string(body)))
	}
}
