package regionguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestARecordIsOnTheRegionsTopicKeyedByItsRowWithAWriteEventValue(t *testing.T) {
	p := &Producer{prefix: "rg."} // Record needs no connection
	rec, err := p.Record(NewEvent("us-east-1", "users", "upsert", map[string]any{"id": 42},
		map[string]any{"name": "Ada", "version": 7}))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Topic != "rg.writes.us-east-1" || string(rec.Key) != "users/42" {
		t.Fatalf("topic %q key %q", rec.Topic, rec.Key)
	}
	var ev map[string]any
	if err := json.Unmarshal(rec.Value, &ev); err != nil {
		t.Fatal(err)
	}
	if !v7.MatchString(ev["id"].(string)) {
		t.Errorf("id %v is not a UUIDv7", ev["id"])
	}
	if ev["policy"] != "hold" || ev["op"] != "upsert" || ev["created_at"] == "" {
		t.Errorf("event %v", ev)
	}
	if _, ok := ev["ordering_key"]; ok {
		t.Errorf("an event without an ordering key carries one: %v", ev)
	}
}

func TestAGroupIsOneEventKeyedByItsOrderingKey(t *testing.T) {
	p := &Producer{prefix: "rg."}
	ev, err := p.Group("eu", "customer/42").
		Insert("orders", map[string]any{"id": 7}, map[string]any{"user_id": 42}).
		Delete("order_items", map[string]any{"order_id": 7, "line": 1}).
		Policy("failover", "us").Event()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := p.Record(ev)
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != "customer/42" || len(ev.Ops) != 2 || ev.Ops[1].Op != "delete" || ev.Ops[1].Data != nil {
		t.Fatalf("key %q ops %+v", rec.Key, ev.Ops)
	}
	if ev.Policy != "failover" || len(ev.FallbackRegions) != 1 || ev.Table != "" {
		t.Fatalf("event %+v", ev)
	}
}

func TestAGroupRefusesNoOpsTooManyOpsAndNoOrderingKey(t *testing.T) {
	if _, err := NewGroup("eu", "k").Event(); err == nil {
		t.Error("an empty group was accepted")
	}
	if _, err := NewGroup("eu", "").Delete("t", map[string]any{"id": 1}).Event(); err == nil {
		t.Error("a group without an ordering key was accepted")
	}
	g := NewGroup("eu", "k")
	for i := 0; i <= MaxGroupOps; i++ {
		g.Delete("t", map[string]any{"id": i})
	}
	if _, err := g.Event(); err == nil {
		t.Errorf("a group of %d ops was accepted", MaxGroupOps+1)
	}
}

func TestPartitionRefusesNoPartitions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Partition(key, 0) did not panic")
		}
	}()
	Partition([]byte("k"), 0)
}

// previousGo is the Go release before the one running the tests (go1.26.8 -> 1.25; 1.25 on a devel
// build): the module and every module it builds with must ask for no newer Go than this, so both
// releases build it without downloading a toolchain.
func previousGo() string {
	major, m := minor(strings.TrimPrefix(runtime.Version(), "go"))
	if major == 0 || m == 0 {
		return "1.25"
	}
	return fmt.Sprintf("%d.%d", major, m-1)
}

func minor(v string) (int, int) {
	parts := strings.SplitN(v, ".", 3)
	major, _ := strconv.Atoi(parts[0])
	m := 0
	if len(parts) > 1 {
		m, _ = strconv.Atoi(parts[1])
	}
	return major, m
}

func TestEveryModuleBuildsWithThePreviousGoRelease(t *testing.T) {
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^toolchain `).Match(mod) {
		t.Error("go.mod has a toolchain line: an older go command would download that toolchain")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.GoVersion}}", "all").Output()
	if err != nil {
		t.Skipf("go list -m all: %v", err) // no go command (a test binary run elsewhere)
	}
	prev := previousGo()
	maxMajor, maxMinor := minor(prev)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue // a module without a go directive (go 1.16 semantics)
		}
		major, m := minor(f[1])
		if major > maxMajor || (major == maxMajor && m > maxMinor) {
			t.Errorf("%s asks for go %s: Go %s cannot build it without downloading a toolchain", f[0], f[1], prev)
		}
	}
}

func TestNotAcknowledgedErrorIsTypedOneLineAndRetriableByType(t *testing.T) {
	timedOut := &NotAcknowledgedError{Region: "eu", Topic: "rg.writes.eu", ID: "w1", Err: fmt.Errorf("records have timed out\nlast err: %w", kgo.ErrRecordTimeout)}
	var err error = timedOut
	var nae *NotAcknowledgedError
	if !errors.As(err, &nae) || !nae.Retriable() || !errors.Is(err, kgo.ErrRecordTimeout) {
		t.Fatalf("want a retriable *NotAcknowledgedError wrapping kgo.ErrRecordTimeout: %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "region eu (topic rg.writes.eu) not acknowledged (delivery timeout 30s)") {
		t.Fatalf("one line naming region and topic: %q", msg)
	}
	tooLarge := &NotAcknowledgedError{Region: "eu", Topic: "rg.writes.eu", ID: "w2", Err: kerr.MessageTooLarge}
	if tooLarge.Retriable() {
		t.Fatal("a record the broker refuses as too large is not retriable")
	}
}
