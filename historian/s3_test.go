package historian

import (
	"context"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// minioBinary finds the MinIO server that scripts/install-s3.sh installs:
// $MILLSTREAM_MINIO, minio on PATH, or $GOPATH/bin/minio. Without one the
// test skips, or fails under CI=true.
func minioBinary(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("MILLSTREAM_MINIO")}
	if p, err := exec.LookPath("minio"); err == nil {
		cands = append(cands, p)
	}
	cands = append(cands, filepath.Join(build.Default.GOPATH, "bin", "minio"))
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() {
			return c
		}
	}
	msg := "minio (the MinIO server) not found: run scripts/install-s3.sh or set MILLSTREAM_MINIO"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMinio runs a MinIO server on 127.0.0.1 for the test and returns
// its endpoint and credentials; it is killed by PID at the end.
func startMinio(t *testing.T) S3Options {
	t.Helper()
	bin := minioBinary(t)
	const user, pass = "millstream", "millstream-secret"
	var endpoint string
	var cmd *exec.Cmd
	for attempt := 0; attempt < 3 && cmd == nil; attempt++ {
		port, console := freePort(t), freePort(t)
		endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		c := exec.Command(bin, "server", t.TempDir(), "--address", endpoint,
			"--console-address", fmt.Sprintf("127.0.0.1:%d", console), "--quiet")
		c.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+pass,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
		logf, err := os.Create(filepath.Join(t.TempDir(), "minio.log"))
		if err != nil {
			t.Fatal(err)
		}
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { c.Wait(); close(exited) }()
		t.Cleanup(func() {
			c.Process.Signal(syscall.SIGKILL)
			<-exited
			logf.Close()
		})
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				b, _ := os.ReadFile(logf.Name())
				t.Logf("minio exited: %s", b)
				deadline = time.Time{}
				continue
			default:
			}
			resp, err := http.Get("http://" + endpoint + "/minio/health/live")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					cmd = c
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if cmd == nil {
		t.Fatal("minio did not start")
	}
	return S3Options{Endpoint: endpoint, Bucket: "historian", Prefix: "site1/hist", AccessKey: user, SecretKey: pass,
		Region: "us-east-1", CreateBucket: true}
}

// TestTieringToS3 runs the tiering test against a real S3-compatible
// server (MinIO) on 127.0.0.1, and checks that the historian refuses
// bad credentials up front.
func TestTieringToS3(t *testing.T) {
	o := startMinio(t)
	store, err := NewS3Store(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	testTiering(t, TierOptions{S3: &o}, store)

	// Objects live under the prefix: another prefix sees none.
	other := o
	other.Prefix = "site2"
	if s2, err := NewS3Store(context.Background(), other); err != nil {
		t.Fatal(err)
	} else if keys, err := s2.List(context.Background(), ""); err != nil || len(keys) != 0 {
		t.Fatalf("prefix site2 lists %v, %v", keys, err)
	}
	bad := o
	bad.SecretKey = "wrong"
	if _, err := Open(tierOpts(t.TempDir(), TierOptions{S3: &bad})); err == nil {
		t.Fatal("wrong secret key accepted")
	}
}
