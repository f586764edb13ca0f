#!/usr/bin/env ruby
# Renders one of this release's job templates from a set of properties, the way BOSH does, to preview
# a job's config (and for tests/release.rs):
#
#   ruby release/render.rb JOB TEMPLATE PROPERTIES.{json,yml} [OUT]
#   ruby release/render.rb vmcpi_cpi cpi.json.erb my-props.yml
#
# PROPERTIES holds the job's properties as a manifest gives them (`cloud_provider.properties` for
# create-env, the instance group's or job's `properties` on a director). As with BOSH, only the
# properties the job spec declares are visible, spec defaults fill in the unset ones, and templates
# see them through p() and if_p(). Only what the release's templates use is provided.
require 'erb'
require 'json'
require 'yaml'

# The evaluation context a template sees: p(), if_p(), name, index, spec.
class JobTemplateContext
  attr_reader :name, :index, :spec

  class UnknownProperty < StandardError; end

  # job_spec: the parsed job `spec` file; given: the properties hash from the manifest.
  def initialize(job_spec, given)
    @name = job_spec['name']
    @index = 0
    @spec = { 'name' => @name, 'index' => 0, 'properties' => given }
    @props = {}
    (job_spec['properties'] || {}).each do |prop, definition|
      value = dig(given, prop)
      value = (definition || {})['default'] if value.nil?
      store(@props, prop, value)
    end
  end

  def binding_for_template
    binding
  end

  # p('a.b'), p(['a.b', 'c.d']) (first one set wins), p('a.b', fallback).
  def p(*args)
    names = Array(args[0])
    names.each do |n|
      value = dig(@props, n)
      return value unless value.nil?
    end
    return args[1] if args.length == 2

    raise UnknownProperty, "Can't find property '#{names.join("', or '")}'"
  end

  # Yields the values when every named property is set (false counts as set), and returns an
  # object whose else / else_if_p run only when it did not.
  def if_p(*names)
    values = names.map { |n| dig(@props, n) }
    return Otherwise.new(self) if values.any?(&:nil?)

    yield(*values)
    Done.new
  end

  def if_link(_name)
    false
  end

  # What if_p returns when it did not yield.
  class Otherwise
    def initialize(context)
      @context = context
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @context.if_p(*names, &block)
    end
  end

  # What if_p returns when it yielded.
  class Done
    def else; end

    def else_if_p(*_names)
      Done.new
    end
  end

  private

  def dig(hash, dotted)
    dotted.split('.').reduce(hash) do |node, key|
      return nil unless node.is_a?(Hash)

      node[key]
    end
  end

  def store(hash, dotted, value)
    *parents, last = dotted.split('.')
    node = parents.reduce(hash) { |h, key| h[key] = {} unless h[key].is_a?(Hash); h[key] }
    node[last] = value unless node.key?(last) && value.nil?
  end
end

def load_properties(path)
  text = File.read(path)
  data = path.end_with?('.json') ? JSON.parse(text) : YAML.safe_load(text, aliases: true)
  data || {}
end

if $PROGRAM_NAME == __FILE__
  if ARGV.length < 3 || ARGV.length > 4
    warn 'usage: ruby release/render.rb JOB TEMPLATE PROPERTIES.{json,yml} [OUT]'
    exit 2
  end
  job, template, props_path, out = ARGV
  job_dir = File.expand_path(File.join('..', 'jobs', job), __dir__)
  job_spec = YAML.safe_load(File.read(File.join(job_dir, 'spec')))
  unless (job_spec['templates'] || {}).key?(template)
    warn "render.rb: job #{job} has no template #{template} (it has: #{(job_spec['templates'] || {}).keys.join(', ')})"
    exit 2
  end
  source = File.join(job_dir, 'templates', template)
  context = JobTemplateContext.new(job_spec, load_properties(props_path))
  erb = ERB.new(File.read(source), trim_mode: '-')
  erb.filename = source
  begin
    result = erb.result(context.binding_for_template)
  rescue StandardError => e
    warn "render.rb: #{job}/#{template}: #{e.message}"
    exit 1
  end
  if out
    File.write(out, result)
  else
    $stdout.write(result)
  end
end
