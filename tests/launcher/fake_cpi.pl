#!/usr/bin/perl
# A scriptable fake BOSH CPI for the launcher tests: state in the directory given as the only argument.
#   vms/<cid>.json        one file per VM (the create_vm arguments); metadata in vms/<cid>.meta.json
#   calls.log             one line per call: "<method> <cid or -> <job or ->" (create_vm: then the agent tags)
#   contexts.log          one line per call: "<method> <request_id> <vm.stemcell.api_version or ->"
#   script.json           faults: {"create_vm":{"delay_ms":N,"fail":N,"crash":N,"echo_env":true}, "has_vm":"lie_false",
#                                  "create_stemcell":{"delay_ms":N}, "down":true}
#                         down: every call fails without an answer (the host is unreachable)
#                         power: {"boot_ms":N}: answers only N ms after fake_power.pl powered the host on
#                         the first `fail` create_vm calls fail, the next `crash` ones die (counted in count.create_vm);
#                         echo_env: a failure's message holds the request's env (kept in failed_env.json)
use strict;
use warnings;
use JSON::PP;
use Fcntl qw(:flock);
use Time::HiRes qw(usleep time);

my $dir = shift @ARGV or die "usage: fake_cpi.pl STATE_DIR\n";
mkdir "$dir/vms";
my $json = JSON::PP->new->canonical;
local $/;
my $req = $json->decode(<STDIN>);
my ($method, $args) = ($req->{method}, $req->{arguments});
my $script = {};
if (open my $fh, '<', "$dir/script.json") { $script = $json->decode(<$fh>); }

sub out { print $json->encode({result => $_[0], error => undef, log => ""}); exit 0; }
sub err { print $json->encode({result => undef, error => {type => $_[0], message => $_[1], ok_to_retry => JSON::PP::false}, log => ""}); exit 0; }
sub logcall {
    open my $l, '>>', "$dir/calls.log" or die;
    flock $l, LOCK_EX;
    print $l join(' ', @_) . "\n";
    close $l;
}
sub count {
    my $name = shift;
    open my $c, '+>>', "$dir/count.$name" or die;
    flock $c, LOCK_EX;
    seek $c, 0, 0;
    my $n = <$c> // 0;
    $n = 0 if $n eq '';
    $n++;
    truncate $c, 0;
    print $c $n;
    close $c;
    return $n;
}

{
    # every call's context, one line each: "<method> <request_id> <vm.stemcell.api_version or ->"
    my $ctx = $req->{context} // {};
    open my $l, '>>', "$dir/contexts.log" or die;
    flock $l, LOCK_EX;
    print $l join(' ', $method, $ctx->{request_id} // '-', $ctx->{vm}{stemcell}{api_version} // '-') . "\n";
    close $l;
}
# a host with power management (fake_power.pl): it answers only when powered on for boot_ms
if (my $pw = $script->{power}) {
    my @st = stat "$dir/powered_on";
    if (!@st || (time - $st[9]) * 1000 < ($pw->{boot_ms} // 0)) {
        logcall("${method}_asleep", '-', '-');
        print STDERR "ssh: connect to host: No route to host\n";
        exit 255;
    }
}
# a host that is down (or a CPI that cannot reach it): no answer, like an ssh that cannot connect
if ($script->{down}) {
    logcall("${method}_down", '-', '-');
    print STDERR "ssh: connect to host: No route to host\n";
    exit 255;
}
if ($method eq 'create_stemcell') {
    count('create_stemcell');
    usleep(($script->{create_stemcell}{delay_ms} // 0) * 1000);
    logcall('create_stemcell', '-', '-');
    out('sc-fake');
}
if ($method eq 'create_vm') {
    my $s = $script->{create_vm} // {};
    my $n = count('create_vm');
    # the pids of creates in flight, so a test can kill them with their host
    open my $pf, '>', "$dir/pid.$$"; close $pf;
    usleep(($s->{delay_ms} // 0) * 1000);
    my $job = $args->[5]{agent_launcher}{job_id} // '-';
    my ($fail, $crash) = ($s->{fail} // 0, $s->{crash} // 0);
    if ($n <= $fail) {
        unlink "$dir/pid.$$";
        logcall('create_vm_fail', '-', $job);
        # echo_env: the error echoes the request's env (as a careless CPI would), which holds the VM's secret
        if ($s->{echo_env}) {
            open my $e, '>', "$dir/failed_env.json" or die;
            print $e $json->encode($args->[5]);
            close $e;
            err('Bosh::Clouds::VMCreationFailed', "injected failure $n; env: " . $json->encode($args->[5]));
        }
        err('Bosh::Clouds::VMCreationFailed', "injected failure $n");
    }
    if ($n <= $fail + $crash) { logcall('create_vm_crash', '-', $job); kill 'KILL', $$; }
    my $cid = sprintf('vm-%d-%d', int(time * 1000), $$);
    open my $v, '>', "$dir/vms/$cid.json.tmp" or die;
    print $v $json->encode($args);
    close $v;
    rename "$dir/vms/$cid.json.tmp", "$dir/vms/$cid.json";
    logcall('create_vm', $cid, $job, $args->[5]{agent_launcher}{agent_tags} // '-');
    unlink "$dir/pid.$$";
    out([$cid, $args->[3]]);
}
if ($method eq 'delete_vm') {
    my $cid = $args->[0];
    usleep(($script->{delete_vm}{delay_ms} // 0) * 1000);
    if (-e "$dir/vms/$cid.json") {
        unlink "$dir/vms/$cid.json", "$dir/vms/$cid.meta.json";
        logcall('delete_vm', $cid, '-');
        out(undef);
    }
    logcall('delete_vm_missing', $cid, '-');
    err('Bosh::Clouds::VMNotFound', "VM '$cid' not found");
}
if ($method eq 'has_vm') {
    my $cid = $args->[0];
    logcall('has_vm', $cid, '-');
    out(JSON::PP::false) if ($script->{has_vm} // '') eq 'lie_false';
    out(-e "$dir/vms/$cid.json" ? JSON::PP::true : JSON::PP::false);
}
if ($method eq 'set_vm_metadata') {
    my $cid = $args->[0];
    err('Bosh::Clouds::VMNotFound', "VM '$cid' not found") unless -e "$dir/vms/$cid.json";
    open my $m, '>', "$dir/vms/$cid.meta.json.tmp" or die;
    print $m $json->encode($args->[1]);
    close $m;
    rename "$dir/vms/$cid.meta.json.tmp", "$dir/vms/$cid.meta.json";
    out(undef);
}
if ($method eq 'info') { out({stemcell_formats => ['fake'], api_version => 2}); }
err('Bosh::Clouds::NotImplemented', "$method is not implemented by the fake CPI");
