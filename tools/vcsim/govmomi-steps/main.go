// govmomi-steps — the steps of each vSphere CPI method done with govmomi's public API, one process and
// one session (connect, login, logout) per step, as a CPI process has. It is the yardstick of the request
// counts in tools/bench-report.sh: the same steps as vmcpi's driver (src/driver/vsphere), written the way
// govmomi is meant to be used (find.Finder for lookups, object.* for calls, Task.Wait for tasks), so that
// the difference in HTTP requests is the clients', not the steps'.
//
// Built like the simulator, from Debian's govmomi source (GOPATH=/usr/share/gocode, GO111MODULE=off):
// see ../build.sh. Usage:
//
//	govmomi-steps -url https://user:pass@127.0.0.1:PORT/sdk -ca cert.pem -dc DC0 STEP ARGS...
//
// Steps (names as vmcpi's; folders as vmcpi's defaults vmcpi_templates, vmcpi_vms, vmcpi_disks):
//
//	create_stemcell NAME DIR      (DIR holds one .ovf and its disk files)
//	create_vm NAME STEMCELL
//	has_vm NAME                   (prints true or false)
//	set_vm_metadata NAME KEY=VALUE...
//	create_disk NAME SIZE_MIB VM
//	attach_disk VM DISK           (prints the unit number)
//	detach_disk VM DISK
//	delete_vm NAME
//	delete_disk NAME
//	delete_stemcell NAME
//
// The settings medium uploaded by create_vm, attach_disk and detach_disk is the settings JSON itself, a
// stand-in for vmcpi's ISO: the request count does not depend on its bytes.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	templateFolder = "vmcpi_templates"
	vmFolder       = "vmcpi_vms"
	diskFolder     = "vmcpi_disks"
	network        = "VM Network"
)

type steps struct {
	ctx    context.Context
	c      *govmomi.Client
	finder *find.Finder
	dc     *object.Datacenter
}

func main() {
	rawURL := flag.String("url", "", "SDK URL with user:password@")
	ca := flag.String("ca", "", "PEM file to trust (the server's certificate)")
	dcName := flag.String("dc", "DC0", "datacenter")
	flag.Parse()
	args := flag.Args()
	if *rawURL == "" || len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: govmomi-steps -url URL [-ca PEM] [-dc DC] STEP ARGS...")
		os.Exit(2)
	}
	u, err := url.Parse(*rawURL)
	check(err)
	ctx := context.Background()

	// one session for this step: service content, login ... logout
	sc := soap.NewClient(u, false)
	if *ca != "" {
		check(sc.SetRootCAs(*ca))
	}
	vc, err := vim25.NewClient(ctx, sc)
	check(err)
	c := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	check(c.Login(ctx, u.User))
	defer c.Logout(ctx)

	finder := find.NewFinder(c.Client, false)
	dc, err := finder.Datacenter(ctx, *dcName)
	check(err)
	finder.SetDatacenter(dc)
	s := &steps{ctx: ctx, c: c, finder: finder, dc: dc}

	out := ""
	switch args[0] {
	case "create_stemcell":
		need(args, 3)
		s.createStemcell(args[1], args[2])
	case "create_vm":
		need(args, 3)
		s.createVM(args[1], args[2])
	case "has_vm":
		need(args, 2)
		out = strconv.FormatBool(s.vm(vmFolder, args[1]) != nil)
	case "set_vm_metadata":
		need(args, 3)
		s.setMetadata(args[1], args[2:])
	case "create_disk":
		need(args, 4)
		size, err := strconv.ParseInt(args[2], 10, 64)
		check(err)
		s.createDisk(args[1], size, args[3])
	case "attach_disk":
		need(args, 3)
		out = s.attach(args[1], args[2])
	case "detach_disk":
		need(args, 3)
		s.detach(args[1], args[2])
	case "delete_vm":
		need(args, 2)
		s.deleteVM(vmFolder, args[1], true)
	case "delete_disk":
		need(args, 2)
		s.deleteDisk(args[1])
	case "delete_stemcell":
		need(args, 2)
		s.deleteVM(templateFolder, args[1], false)
	default:
		fmt.Fprintf(os.Stderr, "unknown step %q\n", args[0])
		os.Exit(2)
	}
	if out != "" {
		fmt.Println(out)
	}
}

func need(args []string, n int) {
	if len(args) < n {
		fmt.Fprintf(os.Stderr, "%s needs %d arguments\n", args[0], n-1)
		os.Exit(2)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "govmomi-steps:", err)
		os.Exit(1)
	}
}

func (s *steps) wait(t *object.Task, err error) types.AnyType {
	check(err)
	info, err := t.WaitForResult(s.ctx, nil)
	check(err)
	return info.Result
}

// folder finds dc/vm/NAME, creating it when missing.
func (s *steps) folder(name string) *object.Folder {
	f, err := s.finder.Folder(s.ctx, "vm/"+name)
	if err == nil {
		return f
	}
	var nf *find.NotFoundError
	if !errors.As(err, &nf) {
		check(err)
	}
	folders, err := s.dc.Folders(s.ctx)
	check(err)
	f, err = folders.VmFolder.CreateFolder(s.ctx, name)
	check(err)
	return f
}

// pool: the root resource pool of the host folder's first compute resource (cluster or host), as vmcpi
// picks it when no cluster is configured.
func (s *steps) pool() *object.ResourcePool {
	list, err := s.finder.ComputeResourceList(s.ctx, "*")
	check(err)
	if len(list) == 0 {
		check(errors.New("no compute resource"))
	}
	pool, err := list[0].ResourcePool(s.ctx)
	check(err)
	return pool
}

// vm finds FOLDER/NAME; nil when there is none.
func (s *steps) vm(folder, name string) *object.VirtualMachine {
	vm, err := s.finder.VirtualMachine(s.ctx, folder+"/"+name)
	var nf *find.NotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	check(err)
	return vm
}

// datastore: the accessible datastore with the most free space, as vmcpi picks it.
func (s *steps) datastore() *object.Datastore {
	return s.datastoreNear("")
}

// datastoreNear: the accessible datastore named near, else the one with the most free space.
func (s *steps) datastoreNear(near string) *object.Datastore {
	list, err := s.finder.DatastoreList(s.ctx, "*")
	check(err)
	refs := make([]types.ManagedObjectReference, len(list))
	for i, d := range list {
		refs[i] = d.Reference()
	}
	var mds []mo.Datastore
	check(s.c.PropertyCollector().Retrieve(s.ctx, refs, []string{"name", "summary"}, &mds))
	sort.Slice(mds, func(i, j int) bool {
		if (mds[i].Name == near) != (mds[j].Name == near) {
			return mds[i].Name == near
		}
		return mds[i].Summary.FreeSpace > mds[j].Summary.FreeSpace
	})
	for _, md := range mds {
		if md.Summary.Accessible {
			for _, d := range list {
				if d.Reference() == md.Reference() {
					return d
				}
			}
		}
	}
	check(errors.New("no accessible datastore"))
	return nil
}

// exists: HEAD on the datastore's /folder URL, as vmcpi checks a file.
func (s *steps) exists(ds *object.Datastore, path string) bool {
	req, err := http.NewRequest("HEAD", ds.NewURL(path).String(), nil)
	check(err)
	found := false
	check(s.c.Client.Client.Do(s.ctx, req, func(r *http.Response) error {
		found = r.StatusCode == http.StatusOK
		return nil
	}))
	return found
}

func (s *steps) createStemcell(name, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.ovf"))
	check(err)
	if len(files) == 0 {
		check(fmt.Errorf("no .ovf in %s", dir))
	}
	desc, err := ioutil.ReadFile(files[0])
	check(err)
	pool := s.pool()
	ds := s.datastore()
	folder := s.folder(templateFolder)
	spec, err := ovf.NewManager(s.c.Client).CreateImportSpec(s.ctx, string(desc), pool, ds,
		types.OvfCreateImportSpecParams{EntityName: name})
	check(err)
	if spec.Error != nil {
		check(errors.New(spec.Error[0].LocalizedMessage))
	}
	lease, err := pool.ImportVApp(s.ctx, spec.ImportSpec, folder, nil)
	check(err)
	info, err := lease.Wait(s.ctx, spec.FileItem)
	check(err)
	updater := lease.StartUpdater(s.ctx, info)
	for _, item := range info.Items {
		f, err := os.Open(filepath.Join(dir, item.Path))
		check(err)
		st, err := f.Stat()
		check(err)
		check(lease.Upload(s.ctx, item, f, soap.Upload{ContentLength: st.Size()}))
		f.Close()
	}
	updater.Done()
	check(lease.Complete(s.ctx))
	vm := object.NewVirtualMachine(s.c.Client, info.Entity)
	s.wait(vm.CreateSnapshot(s.ctx, "initial", "", false, false))
}

// settings is a small stand-in for the agent settings (the same shape of update as vmcpi's).
func settings(name string, disks map[string]string) []byte {
	b, _ := json.Marshal(map[string]interface{}{"vm": map[string]string{"name": name}, "disks": map[string]interface{}{"persistent": disks}})
	return b
}

func guestinfo(js []byte) []types.BaseOptionValue {
	return []types.BaseOptionValue{
		&types.OptionValue{Key: "guestinfo.userdata", Value: base64.StdEncoding.EncodeToString(js)},
		&types.OptionValue{Key: "guestinfo.userdata.encoding", Value: "base64"},
	}
}

// vmDatastore: the datastore (found by name) and folder of a VM's files.
func (s *steps) vmDatastore(vmPath string) (*object.Datastore, string) {
	var p object.DatastorePath
	if !p.FromString(vmPath) {
		check(fmt.Errorf("bad VM path %q", vmPath))
	}
	ds, err := s.finder.Datastore(s.ctx, p.Datastore)
	check(err)
	return ds, filepath.Dir(p.Path)
}

// isoName alternates between env-a.iso and env-b.iso, as vmcpi does.
func isoName(cd *types.VirtualCdrom) string {
	if b, ok := cd.Backing.(*types.VirtualCdromIsoBackingInfo); ok && strings.HasSuffix(b.FileName, "/env-a.iso") {
		return "env-b.iso"
	}
	return "env-a.iso"
}

func (s *steps) createVM(name, stemcell string) {
	sc := s.vm(templateFolder, stemcell)
	if sc == nil {
		check(fmt.Errorf("stemcell %s not found", stemcell))
	}
	var scm mo.VirtualMachine
	check(sc.Properties(s.ctx, sc.Reference(), []string{"snapshot"}, &scm))
	if scm.Snapshot == nil || scm.Snapshot.CurrentSnapshot == nil {
		check(errors.New("stemcell has no snapshot"))
	}
	net, err := s.finder.Network(s.ctx, network)
	check(err)
	backing, err := net.EthernetCardBackingInfo(s.ctx)
	check(err)
	pool := s.pool()
	folder := s.folder(vmFolder)
	poolRef := pool.Reference()
	move := string(types.VirtualMachineRelocateDiskMoveOptionsCreateNewChildDiskBacking)
	spec := types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Pool: &poolRef, DiskMoveType: move},
		Snapshot: scm.Snapshot.CurrentSnapshot,
	}
	ref := s.wait(sc.Clone(s.ctx, folder, name, spec)).(types.ManagedObjectReference)
	vm := object.NewVirtualMachine(s.c.Client, ref)
	var m mo.VirtualMachine
	check(vm.Properties(s.ctx, ref, []string{"config.hardware.device", "config.files.vmPathName"}, &m))
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	var changes []types.BaseVirtualDeviceConfigSpec
	for _, nic := range devices.SelectByType((*types.VirtualEthernetCard)(nil)) {
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: nic})
	}
	nic, err := devices.CreateEthernetCard("vmxnet3", backing)
	check(err)
	changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: nic})
	scsi, err := devices.FindDiskController("scsi")
	check(err)
	ds, dir := s.vmDatastore(m.Config.Files.VmPathName)
	disk := devices.CreateDisk(scsi, ds.Reference(), ds.Path(dir+"/"+name+"-ephemeral.vmdk"))
	disk.CapacityInKB = 1024 * 1024
	changes = append(changes, &types.VirtualDeviceConfigSpec{
		Operation: types.VirtualDeviceConfigSpecOperationAdd, FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk})
	js := settings(name, map[string]string{})
	cd, err := devices.FindCdrom("")
	op := types.VirtualDeviceConfigSpecOperationEdit
	if err != nil {
		ide, err := devices.FindIDEController("")
		check(err)
		cd, err = devices.CreateCdrom(ide)
		check(err)
		op = types.VirtualDeviceConfigSpecOperationAdd
	}
	iso := isoName(cd)
	check(ds.Upload(s.ctx, strings.NewReader(string(js)), dir+"/"+iso, &soap.DefaultUpload))
	changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: op, Device: devices.InsertIso(cd, ds.Path(dir+"/"+iso))})
	s.wait(vm.Reconfigure(s.ctx, types.VirtualMachineConfigSpec{
		NumCPUs: 2, MemoryMB: 1024, DeviceChange: changes, ExtraConfig: guestinfo(js)}))
	s.wait(vm.PowerOn(s.ctx))
}

func (s *steps) setMetadata(name string, kv []string) {
	vm := s.vm(vmFolder, name)
	if vm == nil {
		check(fmt.Errorf("VM %s not found", name))
	}
	cfm, err := object.GetCustomFieldsManager(s.c.Client)
	check(err)
	fields, err := cfm.Field(s.ctx)
	check(err)
	for _, pair := range kv {
		k, v := pair, ""
		if i := strings.IndexByte(pair, '='); i >= 0 {
			k, v = pair[:i], pair[i+1:]
		}
		key := int32(-1)
		for _, f := range fields {
			if f.Name == k {
				key = f.Key
			}
		}
		if key < 0 {
			def, err := cfm.Add(s.ctx, k, "VirtualMachine", nil, nil)
			check(err)
			key = def.Key
		}
		check(cfm.Set(s.ctx, vm.Reference(), key, v))
	}
}

func (s *steps) createDisk(name string, sizeMiB int64, vmName string) {
	// near the VM when its datastore qualifies, else the one with the most free space (as vmcpi)
	near := ""
	if vm := s.vm(vmFolder, vmName); vm != nil {
		var m mo.VirtualMachine
		check(vm.Properties(s.ctx, vm.Reference(), []string{"config.files.vmPathName"}, &m))
		var p object.DatastorePath
		p.FromString(m.Config.Files.VmPathName)
		near = p.Datastore
	}
	ds := s.datastoreNear(near)
	fm := object.NewFileManager(s.c.Client)
	err := fm.MakeDirectory(s.ctx, ds.Path(diskFolder), s.dc, true)
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		check(err)
	}
	spec := &types.FileBackedVirtualDiskSpec{
		VirtualDiskSpec: types.VirtualDiskSpec{DiskType: "thin", AdapterType: "lsiLogic"},
		CapacityKb:      sizeMiB * 1024,
	}
	s.wait(object.NewVirtualDiskManager(s.c.Client).CreateVirtualDisk(s.ctx, ds.Path(diskFolder+"/"+name+".vmdk"), s.dc, spec))
}

// vmWithSettings: the VM's devices, files and settings (guestinfo) in one read.
func (s *steps) vmWithSettings(name string) (*object.VirtualMachine, mo.VirtualMachine) {
	vm := s.vm(vmFolder, name)
	if vm == nil {
		check(fmt.Errorf("VM %s not found", name))
	}
	var m mo.VirtualMachine
	check(vm.Properties(s.ctx, vm.Reference(), []string{"config.hardware.device", "config.files.vmPathName", "config.extraConfig"}, &m))
	return vm, m
}

func (s *steps) changeSettings(vm *object.VirtualMachine, m mo.VirtualMachine, ds *object.Datastore, dir string,
	disks map[string]string, change types.BaseVirtualDeviceConfigSpec) {
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	cd, err := devices.FindCdrom("")
	check(err)
	iso := isoName(cd)
	js := settings(m.Name, disks)
	check(ds.Upload(s.ctx, strings.NewReader(string(js)), dir+"/"+iso, &soap.DefaultUpload))
	changes := []types.BaseVirtualDeviceConfigSpec{change,
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: devices.InsertIso(cd, ds.Path(dir+"/"+iso))}}
	s.wait(vm.Reconfigure(s.ctx, types.VirtualMachineConfigSpec{DeviceChange: changes, ExtraConfig: guestinfo(js)}))
}

func (s *steps) attach(vmName, disk string) string {
	vm, m := s.vmWithSettings(vmName)
	ds, dir := s.vmDatastore(m.Config.Files.VmPathName)
	file := diskFolder + "/" + disk + ".vmdk"
	if !s.exists(ds, file) {
		check(fmt.Errorf("disk %s not on the VM's datastore", disk))
	}
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	scsi, err := devices.FindDiskController("scsi")
	check(err)
	d := devices.CreateDisk(scsi, ds.Reference(), ds.Path(file))
	devices.AssignController(d, scsi)
	s.changeSettings(vm, m, ds, dir, map[string]string{disk: "x"},
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d})
	return strconv.Itoa(int(*d.UnitNumber))
}

func (s *steps) detach(vmName, disk string) {
	vm, m := s.vmWithSettings(vmName)
	ds, dir := s.vmDatastore(m.Config.Files.VmPathName)
	devices := object.VirtualDeviceList(m.Config.Hardware.Device)
	var found types.BaseVirtualDevice
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		if b, ok := d.GetVirtualDevice().Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && strings.HasSuffix(b.FileName, "/"+disk+".vmdk") {
			found = d
		}
	}
	if found == nil {
		check(fmt.Errorf("disk %s is not attached to %s", disk, vmName))
	}
	s.changeSettings(vm, m, ds, dir, map[string]string{},
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: found})
}

func (s *steps) deleteVM(folder, name string, ownFiles bool) {
	vm := s.vm(folder, name)
	if vm == nil {
		return
	}
	var m mo.VirtualMachine
	check(vm.Properties(s.ctx, vm.Reference(), []string{"runtime.powerState", "config.hardware.device", "config.files.vmPathName"}, &m))
	if m.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		s.wait(vm.PowerOff(s.ctx))
	}
	var keep []types.BaseVirtualDeviceConfigSpec
	for _, d := range object.VirtualDeviceList(m.Config.Hardware.Device).SelectByType((*types.VirtualDisk)(nil)) {
		if b, ok := d.GetVirtualDevice().Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && strings.Contains(b.FileName, "] "+diskFolder+"/") {
			keep = append(keep, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d})
		}
	}
	if len(keep) > 0 {
		s.wait(vm.Reconfigure(s.ctx, types.VirtualMachineConfigSpec{DeviceChange: keep}))
	}
	s.wait(vm.Destroy(s.ctx))
	if ownFiles {
		var p object.DatastorePath
		p.FromString(m.Config.Files.VmPathName)
		t, err := object.NewFileManager(s.c.Client).DeleteDatastoreFile(s.ctx, fmt.Sprintf("[%s] %s", p.Datastore, filepath.Dir(p.Path)), s.dc)
		check(err)
		_ = t.Wait(s.ctx) // a folder that is gone already is fine
	}
}

func (s *steps) deleteDisk(name string) {
	list, err := s.finder.DatastoreList(s.ctx, "*")
	check(err)
	file := diskFolder + "/" + name + ".vmdk"
	for _, ds := range list {
		if !s.exists(ds, file) {
			continue
		}
		s.wait(object.NewVirtualDiskManager(s.c.Client).DeleteVirtualDisk(s.ctx, ds.Path(file), s.dc))
		meta := diskFolder + "/" + name + ".meta.json"
		if s.exists(ds, meta) {
			t, err := object.NewFileManager(s.c.Client).DeleteDatastoreFile(s.ctx, ds.Path(meta), s.dc)
			check(err)
			check(t.Wait(s.ctx))
		}
		return
	}
}
