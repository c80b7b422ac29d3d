package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The results directory scripts/benchmarks.sh fills:
//
//	machine.json                 the facts subcommand's output
//	commands.tsv                 KEY<TAB>command, one per measurement
//	settings.tsv                 NAME<TAB>value: the script's parameters
//	builds.tsv                   build.APP.KIND<TAB>seconds
//	gobench-NAME.txt             go test -bench output
//	warm/APP-cC-R.json           ociapp-runtime bench --json, concurrency C, repetition R;
//	                             APP-nopoll without busy polling, APP-load with one
//	                             busy process per core, APP-load-nopoll both
//	cold/APP.json                ociapp-runtime bench -n 0 --cold N --json
//	load/APP-first-R.json        bench -n 0 --json after removing the image
//	load/APP-present-R.json      bench -n 0 --json with the image present
//	pyclient.json                scripts/bench-python-client.sh --client-only:
//	                             the Python client through a daemon, on the
//	                             Python echo
//
// APP is "go" or "python".

// results is everything one run of the script measured.
type results struct {
	Machine  machine
	Commands map[string]string
	Settings map[string]string
	Builds   map[string]float64 // seconds, by build.APP.KIND
	GoBench  []goBench
	Warm     map[string][]warmPoint // by app, ascending concurrency
	Cold     map[string]benchJSON
	Load     map[string]loadRuns
	PyClient *pyClientJSON // nil: not measured
}

// pyClientJSON is clients/python/bench/bench_runtime.py's output: a fresh
// Runtime's start and first execute, on a new state directory and again
// on the state the first left, then warm requests at 1 and 64 tasks.
type pyClientJSON struct {
	FreshStartMS      float64      `json:"fresh_runtime_start_ms"`
	FreshFirstMS      float64      `json:"fresh_runtime_first_execute_ms"`
	FreshAgainStartMS float64      `json:"fresh_runtime_again_start_ms"`
	FreshAgainFirstMS float64      `json:"fresh_runtime_again_first_execute_ms"`
	C1                pyClientWarm `json:"c1"`
	C64               pyClientWarm `json:"c64"`
}

type pyClientWarm struct {
	Requests       int     `json:"requests"`
	P50US          float64 `json:"p50_us"`
	RPS            float64 `json:"req_per_s"`
	ClientCPUPerRq float64 `json:"client_cpu_us_per_req"`
}

// benchJSON is the part of ociapp-runtime bench --json the report uses.
type benchJSON struct {
	Artifact artifactJSON `json:"artifact"`
	Run      *struct {
		Failed        int64   `json:"failed"`
		ThroughputRPS float64 `json:"throughput_rps"`
		LatencyUS     struct {
			P50 float64 `json:"p50"`
			P90 float64 `json:"p90"`
			P99 float64 `json:"p99"`
			Max float64 `json:"max"`
		} `json:"latency_us"`
		CPU *struct {
			CallerUSPerRequest     float64  `json:"caller_us_per_request"`
			ContainersUSPerRequest *float64 `json:"containers_us_per_request"`
		} `json:"cpu"`
	} `json:"run"`
	ColdStart *struct {
		SamplesMS []float64 `json:"samples_ms"`
		MinMS     float64   `json:"min_ms"`
		P50MS     float64   `json:"p50_ms"`
		MaxMS     float64   `json:"max_ms"`
		Failed    int       `json:"failed"`
	} `json:"cold_start"`
	Containers struct {
		Peak int `json:"peak"`
	} `json:"containers"`
}

// artifactJSON is the artifact section of bench --json: its size and the
// time to verify it, look for its image and load it.
type artifactJSON struct {
	SizeBytes    int64   `json:"size_bytes"`
	VerifyMS     float64 `json:"verify_ms"`
	CheckMS      float64 `json:"check_ms"`
	ImagePresent bool    `json:"image_present"`
	LoadMS       float64 `json:"load_ms"`
}

// warmPoint is one concurrency level of one app: the median of each
// figure over the repetitions.
type warmPoint struct {
	Concurrency        int
	P50, P90, P99, Max float64 // µs
	RPS                float64
	Failed             int64
	Containers         int // most containers ready at once, over the repetitions
	// CPUCaller and CPUContainers are the CPU time per request (µs) of
	// the bench process and of the containers; negative when not measured.
	CPUCaller, CPUContainers float64
}

// loadRuns are the artifact load measurements of one app.
type loadRuns struct {
	First, Present []benchJSON
}

var warmName = regexp.MustCompile(`^([a-z]+(?:-load)?(?:-nopoll)?)-c(\d+)-(\d+)\.json$`)
var loadName = regexp.MustCompile(`^([a-z]+)-(first|present)-(\d+)\.json$`)
var coldName = regexp.MustCompile(`^(.+)\.json$`)

func loadResults(dir string) (*results, error) {
	r := &results{
		Commands: map[string]string{},
		Settings: map[string]string{},
		Builds:   map[string]float64{},
		Warm:     map[string][]warmPoint{},
		Cold:     map[string]benchJSON{},
		Load:     map[string]loadRuns{},
	}
	if err := readJSON(filepath.Join(dir, "machine.json"), &r.Machine); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		into map[string]string
	}{{"commands.tsv", r.Commands}, {"settings.tsv", r.Settings}} {
		if err := readTSV(filepath.Join(dir, f.name), func(k, v string) error {
			f.into[k] = v
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if err := readTSV(filepath.Join(dir, "builds.tsv"), func(k, v string) error {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("build time of %s: %w", k, err)
		}
		r.Builds[k] = s
		return nil
	}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}

	benches, _ := filepath.Glob(filepath.Join(dir, "gobench-*.txt"))
	slices.Sort(benches)
	for _, p := range benches {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		bs, err := parseGoBench(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		r.GoBench = append(r.GoBench, bs...)
	}

	warm := map[string]map[int][]benchJSON{}
	if err := eachJSON(filepath.Join(dir, "warm"), warmName, func(m []string, b benchJSON) error {
		if b.Run == nil {
			return errors.New("no run section")
		}
		c, _ := strconv.Atoi(m[2])
		if warm[m[1]] == nil {
			warm[m[1]] = map[int][]benchJSON{}
		}
		warm[m[1]][c] = append(warm[m[1]][c], b)
		return nil
	}); err != nil {
		return nil, err
	}
	for app, byConc := range warm {
		for c, runs := range byConc {
			r.Warm[app] = append(r.Warm[app], summarizeWarm(c, runs))
		}
		slices.SortFunc(r.Warm[app], func(a, b warmPoint) int { return cmp.Compare(a.Concurrency, b.Concurrency) })
	}

	if err := eachJSON(filepath.Join(dir, "cold"), coldName, func(m []string, b benchJSON) error {
		if b.ColdStart == nil {
			return errors.New("no cold_start section")
		}
		r.Cold[m[1]] = b
		return nil
	}); err != nil {
		return nil, err
	}

	var py pyClientJSON
	switch err := readJSON(filepath.Join(dir, "pyclient.json"), &py); {
	case err == nil:
		if py.C1.Requests == 0 || py.C64.Requests == 0 {
			return nil, errors.New("pyclient.json: no warm requests")
		}
		r.PyClient = &py
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}

	if err := eachJSON(filepath.Join(dir, "load"), loadName, func(m []string, b benchJSON) error {
		lr := r.Load[m[1]]
		switch {
		case m[2] == "first" && b.Artifact.ImagePresent:
			return errors.New("the image was present, so this is no first load")
		case m[2] == "first":
			lr.First = append(lr.First, b)
		default:
			lr.Present = append(lr.Present, b)
		}
		r.Load[m[1]] = lr
		return nil
	}); err != nil {
		return nil, err
	}
	return r, nil
}

func summarizeWarm(c int, runs []benchJSON) warmPoint {
	p := warmPoint{Concurrency: c}
	var p50, p90, p99, mx, rps, caller, containers []float64
	for _, b := range runs {
		if cpu := b.Run.CPU; cpu != nil {
			caller = append(caller, cpu.CallerUSPerRequest)
			if cpu.ContainersUSPerRequest != nil {
				containers = append(containers, *cpu.ContainersUSPerRequest)
			}
		}
		l := b.Run.LatencyUS
		p50, p90, p99, mx = append(p50, l.P50), append(p90, l.P90), append(p99, l.P99), append(mx, l.Max)
		rps = append(rps, b.Run.ThroughputRPS)
		p.Failed += b.Run.Failed
		p.Containers = max(p.Containers, b.Containers.Peak)
	}
	p.P50, p.P90, p.P99, p.Max, p.RPS = median(p50), median(p90), median(p99), median(mx), median(rps)
	p.CPUCaller, p.CPUContainers = -1, -1
	if len(caller) == len(runs) {
		p.CPUCaller = median(caller)
	}
	if len(containers) == len(runs) {
		p.CPUContainers = median(containers)
	}
	return p
}

// eachJSON decodes every file in dir whose name matches re, passing the
// submatches; a missing dir has no files.
func eachJSON(dir string, re *regexp.Regexp, f func([]string, benchJSON) error) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		var b benchJSON
		p := filepath.Join(dir, e.Name())
		if err := readJSON(p, &b); err != nil {
			return err
		}
		if err := f(m, b); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func readTSV(path string, f func(k, v string) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "\t")
		if !ok {
			return fmt.Errorf("%s:%d: want KEY<TAB>VALUE", path, n)
		}
		if err := f(k, v); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}
